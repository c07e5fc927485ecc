// The one Axios instance of the UI. It attaches the access token to every request and, when the API
// answers 401, refreshes the session once (one refresh in flight, shared by every waiting request)
// and replays the request. The auth store plugs itself in with configureAuth().
import axios from 'axios'

export const API_BASE = '/api/v1'

export const api = axios.create({
  baseURL: API_BASE,
  timeout: 30000,
  headers: { Accept: 'application/json' },
})

const hooks = {
  getAccessToken: () => null,
  refresh: async () => {
    throw new Error('not signed in')
  },
  onAuthLost: () => {},
}

export function configureAuth(newHooks) {
  Object.assign(hooks, newHooks)
}

// Endpoints that never carry a token and whose 401 means "wrong credentials", not "expired".
const AUTH_ENDPOINTS = ['/auth/login', '/auth/refresh', '/auth/logout']

export function isAuthEndpoint(url = '') {
  const path = url.split('?')[0]
  return AUTH_ENDPOINTS.some((p) => path.endsWith(p))
}

function bearerOf(config) {
  const header = config.headers?.Authorization ?? config.headers?.authorization
  return typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7) : null
}

let inflight = null

/** Refresh the session; concurrent callers share the same request. Resolves to the new token. */
export function refreshOnce(staleToken) {
  if (!inflight) {
    inflight = Promise.resolve()
      .then(() => hooks.refresh(staleToken))
      .finally(() => {
        inflight = null
      })
  }
  return inflight
}

api.interceptors.request.use((config) => {
  const token = hooks.getAccessToken()
  if (token && !isAuthEndpoint(config.url)) {
    config.headers.Authorization = `Bearer ${token}`
  }
  return config
})

api.interceptors.response.use(
  (response) => response,
  async (error) => {
    const { config, response } = error
    if (
      !config ||
      response?.status !== 401 ||
      config._retried ||
      config.skipAuthRefresh ||
      isAuthEndpoint(config.url)
    ) {
      throw error
    }
    config._retried = true
    const failed = bearerOf(config)
    const current = hooks.getAccessToken()
    let token
    if (current && failed && current !== failed) {
      token = current // refreshed meanwhile by another request
    } else {
      try {
        token = await refreshOnce(failed)
      } catch {
        hooks.onAuthLost()
        throw error
      }
    }
    config.headers.Authorization = `Bearer ${token}`
    return api(config)
  },
)
