// Turns an Axios error into something a page can show: a sentence, and per-field messages for
// FastAPI's 422 bodies ({"detail": [{"loc": [...], "msg": ...}]}), keyed by the last name in `loc`.

export function fieldNameOf(loc) {
  if (!Array.isArray(loc) || loc.length === 0) return null
  for (let i = loc.length - 1; i >= 0; i--) {
    if (typeof loc[i] === 'string') return loc[i]
  }
  return String(loc[loc.length - 1])
}

export function describeError(error) {
  if (!error) return null
  const response = error.response
  if (!response) {
    if (error.code === 'ECONNABORTED' || error.code === 'ETIMEDOUT') {
      return { status: 0, message: 'The server took too long to answer. Please try again.', fields: {} }
    }
    if (error.isAxiosError || error.code === 'ERR_NETWORK') {
      return { status: 0, message: 'Cannot reach the server. Check the connection and try again.', fields: {} }
    }
    return { status: 0, message: error.message || 'Something went wrong.', fields: {} }
  }
  const { status } = response
  const detail = response.data?.detail
  const fields = {}
  if (Array.isArray(detail)) {
    for (const item of detail) {
      const name = fieldNameOf(item?.loc) ?? 'body'
      if (!fields[name]) fields[name] = item?.msg ?? 'Invalid value'
    }
    const names = Object.keys(fields)
    return {
      status,
      message: names.length
        ? `Please check: ${names.map((n) => `${n} (${fields[n]})`).join('; ')}.`
        : 'The request was not valid.',
      fields,
    }
  }
  if (typeof detail === 'string' && detail) return { status, message: detail, fields }
  const defaults = {
    400: 'The request was not valid.',
    401: 'Your session has expired. Please sign in again.',
    403: 'You do not have permission to do this.',
    404: 'Not found. It may have been deleted.',
    409: 'This conflicts with the current state. Reload and try again.',
    413: 'The file is too large.',
    429: 'Too many requests. Wait a moment and try again.',
  }
  const message =
    defaults[status] ??
    (status >= 500 ? `The server reported an error (${status}). Please try again.` : `Request failed (${status}).`)
  return { status, message, fields }
}

export function errorMessage(error) {
  return describeError(error)?.message ?? null
}
