import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'
import tailwindcss from '@tailwindcss/vite'
import SummaryReporter from './tests/unit/summary-reporter.js'

// The API is served from the same origin in production (nginx, or the API process itself).
// During `npm run dev` requests to /api are proxied to the local API (DICOMGW_API, default :8080).
const apiTarget = process.env.DICOMGW_API || 'http://127.0.0.1:8080'

export default defineConfig({
  base: '/',
  plugins: [vue(), tailwindcss()],
  resolve: {
    alias: { '@': new URL('./src', import.meta.url).pathname },
  },
  server: {
    proxy: { '/api': { target: apiTarget, changeOrigin: false } },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    chunkSizeWarningLimit: 400,
  },
  test: {
    environment: 'happy-dom',
    include: ['tests/unit/**/*.spec.js'],
    setupFiles: ['tests/unit/setup.js'],
    reporters: ['default', new SummaryReporter()],
    restoreMocks: true,
    pool: 'threads',
    maxWorkers: 2,
  },
})
