// Where the session survives a reload: localStorage, shared by the tabs of this browser.
export const SESSION_KEY = 'dicomgw.session'

export function loadSession() {
  try {
    const raw = localStorage.getItem(SESSION_KEY)
    const s = raw ? JSON.parse(raw) : null
    return s && typeof s.refreshToken === 'string' ? s : null
  } catch {
    return null
  }
}

export function saveSession(session) {
  try {
    if (session) localStorage.setItem(SESSION_KEY, JSON.stringify(session))
    else localStorage.removeItem(SESSION_KEY)
  } catch {
    /* private mode or full storage: the session then lasts as long as the page */
  }
}

/** Run fn while holding a browser-wide lock, so that tabs do not refresh the same token twice. */
export function withSessionLock(fn) {
  if (typeof navigator !== 'undefined' && navigator.locks?.request) {
    return navigator.locks.request('dicomgw.session.refresh', fn)
  }
  return fn()
}
