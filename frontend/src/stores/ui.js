import { defineStore } from 'pinia'

export const THEME_KEY = 'dicomgw.theme'
const THEMES = ['system', 'light', 'dark']
let nextToastId = 1

function storedTheme() {
  try {
    const t = localStorage.getItem(THEME_KEY)
    return THEMES.includes(t) ? t : 'system'
  } catch {
    return 'system'
  }
}

export const useUiStore = defineStore('ui', {
  state: () => ({
    theme: 'system', // the user's choice
    systemDark: false, // what the operating system prefers
    toasts: [],
    confirmRequest: null, // { title, message, confirmLabel, danger, resolve }
    navOpen: false,
  }),
  getters: {
    isDark: (s) => (s.theme === 'system' ? s.systemDark : s.theme === 'dark'),
  },
  actions: {
    initTheme() {
      this.theme = storedTheme()
      const mq = typeof window !== 'undefined' && window.matchMedia?.('(prefers-color-scheme: dark)')
      if (mq) {
        this.systemDark = mq.matches
        mq.addEventListener?.('change', (e) => {
          this.systemDark = e.matches
          this.applyTheme()
        })
      }
      this.applyTheme()
    },
    setTheme(theme) {
      if (!THEMES.includes(theme)) return
      this.theme = theme
      try {
        if (theme === 'system') localStorage.removeItem(THEME_KEY)
        else localStorage.setItem(THEME_KEY, theme)
      } catch {
        /* not remembered, still applied */
      }
      this.applyTheme()
    },
    /** system → light → dark → system */
    cycleTheme() {
      this.setTheme(THEMES[(THEMES.indexOf(this.theme) + 1) % THEMES.length])
    },
    applyTheme() {
      if (typeof document === 'undefined') return
      document.documentElement.classList.toggle('dark', this.isDark)
      document.documentElement.style.colorScheme = this.isDark ? 'dark' : 'light'
    },
    notify(message, type = 'success', timeout = 5000) {
      const id = nextToastId++
      this.toasts.push({ id, message, type })
      if (timeout) setTimeout(() => this.dismiss(id), timeout)
      return id
    },
    dismiss(id) {
      this.toasts = this.toasts.filter((t) => t.id !== id)
    },
    /** Ask the user; resolves true when confirmed. */
    confirm({ title, message, confirmLabel = 'Confirm', danger = false }) {
      if (this.confirmRequest) this.confirmRequest.resolve(false)
      return new Promise((resolve) => {
        this.confirmRequest = { title, message, confirmLabel, danger, resolve }
      })
    },
    answerConfirm(result) {
      const request = this.confirmRequest
      this.confirmRequest = null
      request?.resolve(Boolean(result))
    },
  },
})
