// Dev server and preview both forward /api to a running `nerindex serve`, so the browser talks
// to one origin and nerindex needs no CORS. NERINDEX_URL overrides the address.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

const target = process.env.NERINDEX_URL || "http://127.0.0.1:8000";
const proxy = { "/api": { target, changeOrigin: true } };

export default defineConfig({
  base: "./",
  plugins: [react()],
  server: { port: 5173, proxy },
  preview: { port: 4173, proxy },
});
