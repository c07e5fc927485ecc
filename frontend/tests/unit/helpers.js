// Test helpers: a fake HTTP layer for the shared Axios instance, and an app context (Pinia, router,
// a signed-in user) to mount views in.
import { AxiosError } from 'axios'
import { createPinia, setActivePinia } from 'pinia'
import { createMemoryHistory } from 'vue-router'
import { api } from '@/api/client'
import { createAppRouter } from '@/router'
import { useAuthStore } from '@/stores/auth'

export const ok = (data, status = 200, headers = {}) => ({ status, data, headers })
export const fail = (status, detail) => ({ status, data: detail === undefined ? {} : { detail } })

function parse(data) {
  if (typeof data !== 'string') return data
  try {
    return JSON.parse(data)
  } catch {
    return data
  }
}

/**
 * Route requests of `api` to handlers keyed "METHOD /path" (path without /api/v1 and query).
 * A handler is a response ({status, data}) or a function of the request returning one.
 * Returns the list of requests made.
 */
export function mockApi(routes) {
  const calls = []
  api.defaults.adapter = async (config) => {
    const method = config.method.toUpperCase()
    const url = config.url.split('?')[0]
    const request = {
      method,
      url,
      params: config.params,
      data: parse(config.data),
      authorization: config.headers?.Authorization ?? null,
    }
    calls.push(request)
    const handler = routes[`${method} ${url}`]
    let res = typeof handler === 'function' ? await handler(request) : handler
    if (!res) res = fail(404, `no mock for ${method} ${url}`)
    const response = { data: res.data, status: res.status, statusText: '', headers: res.headers ?? {}, config, request: {} }
    if (res.status >= 200 && res.status < 300) return response
    throw new AxiosError(`Request failed with status code ${res.status}`, 'ERR_BAD_REQUEST', config, {}, response)
  }
  return calls
}

export function signIn(roles = ['admin'], username = 'alice') {
  const auth = useAuthStore()
  auth.init()
  auth.applyTokens({
    access_token: 'access-1',
    refresh_token: 'refresh-1',
    expires_in: 3600,
    user: { id: 1, username, roles },
  })
  return auth
}

/** Pinia + a memory router at `path` + a signed-in user with `roles`. */
export async function setupApp({ roles = ['admin'], path = '/', signedIn = true } = {}) {
  const pinia = createPinia()
  setActivePinia(pinia)
  const auth = signedIn ? signIn(roles) : (useAuthStore().init(), useAuthStore())
  const router = createAppRouter(createMemoryHistory())
  await router.push(path)
  await router.isReady()
  return { pinia, router, auth, global: { plugins: [pinia, router] } }
}

export const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms))
