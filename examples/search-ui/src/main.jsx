import React from "react";
import { createRoot } from "react-dom/client";
import App from "./App.jsx";
import "@elastic/react-search-ui-views/lib/styles/styles.css";
import "./app.css";

createRoot(document.getElementById("root")).render(
  <React.StrictMode>
    <App />
  </React.StrictMode>
);
