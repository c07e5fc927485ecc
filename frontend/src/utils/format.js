const EMPTY = '—'

export function formatDateTime(value) {
  if (!value) return EMPTY
  const d = new Date(value)
  if (Number.isNaN(d.getTime())) return String(value)
  return d.toLocaleString(undefined, {
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  })
}

export function formatTime(value) {
  if (!value) return EMPTY
  const d = new Date(value)
  if (Number.isNaN(d.getTime())) return String(value)
  return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' })
}

/** DICOM DA (YYYYMMDD) or ISO date → YYYY-MM-DD. */
export function formatDicomDate(value) {
  if (!value) return EMPTY
  const s = String(value)
  const m = /^(\d{4})-?(\d{2})-?(\d{2})/.exec(s)
  return m ? `${m[1]}-${m[2]}-${m[3]}` : s
}

/** DICOM PN ("FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX") → "FAMILY, GIVEN MIDDLE". */
export function formatPatientName(value) {
  if (!value) return EMPTY
  const [family = '', given = '', middle = ''] = String(value).split('=')[0].split('^')
  const first = [given, middle].filter(Boolean).join(' ')
  return [family, first].filter(Boolean).join(', ') || EMPTY
}

export function formatBytes(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return EMPTY
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = Number(n)
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`
}

export function formatRelative(value, now = Date.now()) {
  if (!value) return EMPTY
  const t = new Date(value).getTime()
  if (Number.isNaN(t)) return String(value)
  const s = Math.round((now - t) / 1000)
  const future = s < 0
  const a = Math.abs(s)
  let text
  if (a < 45) return future ? 'in a few seconds' : 'just now'
  else if (a < 3600) text = `${Math.round(a / 60)} min`
  else if (a < 86400) text = `${Math.round(a / 3600)} h`
  else text = `${Math.round(a / 86400)} d`
  return future ? `in ${text}` : `${text} ago`
}

export function formatNumber(n) {
  if (n === null || n === undefined) return EMPTY
  return Number(n).toLocaleString()
}

/** A long UID shortened for tables; the full value goes in a title attribute. */
export function shortUid(uid, keep = 14) {
  if (!uid) return EMPTY
  return uid.length > keep + 1 ? `…${uid.slice(-keep)}` : uid
}

/** <input type="datetime-local"> value → ISO 8601 with the browser's offset applied. */
export function localInputToIso(value) {
  if (!value) return ''
  const d = new Date(value)
  return Number.isNaN(d.getTime()) ? value : d.toISOString()
}

// "Account locked until <ISO time>": add the time in the browser's zone, as the API speaks UTC
export function withLocalTime(message) {
  const m = /\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:?\d{2})?/.exec(message ?? '')
  if (!m) return message
  const d = new Date(m[0])
  if (Number.isNaN(d.getTime())) return message
  return `${message} (${d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })} local time)`
}
