// Delivery states, in the order the UI lists them, with their badge colours (light and dark).
export const DELIVERY_STATES = ['pending', 'claimed', 'retry', 'held', 'dead', 'sent', 'cancelled']

export const STATE_LABELS = {
  pending: 'Pending',
  claimed: 'Sending',
  retry: 'Retry',
  held: 'Held',
  dead: 'Dead letter',
  sent: 'Sent',
  cancelled: 'Cancelled',
}

export const STATE_CLASSES = {
  pending: 'bg-sky-100 text-sky-900 ring-sky-300 dark:bg-sky-950 dark:text-sky-200 dark:ring-sky-800',
  claimed: 'bg-indigo-100 text-indigo-900 ring-indigo-300 dark:bg-indigo-950 dark:text-indigo-200 dark:ring-indigo-800',
  retry: 'bg-amber-100 text-amber-900 ring-amber-300 dark:bg-amber-950 dark:text-amber-200 dark:ring-amber-800',
  held: 'bg-violet-100 text-violet-900 ring-violet-300 dark:bg-violet-950 dark:text-violet-200 dark:ring-violet-800',
  dead: 'bg-red-100 text-red-900 ring-red-300 dark:bg-red-950 dark:text-red-200 dark:ring-red-800',
  sent: 'bg-emerald-100 text-emerald-900 ring-emerald-300 dark:bg-emerald-950 dark:text-emerald-200 dark:ring-emerald-800',
  cancelled: 'bg-slate-100 text-slate-800 ring-slate-300 dark:bg-slate-800 dark:text-slate-200 dark:ring-slate-600',
}

export function stateLabel(state) {
  return STATE_LABELS[state] ?? state ?? 'Unknown'
}

export function stateClass(state) {
  return STATE_CLASSES[state] ?? STATE_CLASSES.cancelled
}

/** Non-zero counts of a {state: n} object, in display order. */
export function nonZeroStates(counts) {
  if (!counts) return []
  const known = DELIVERY_STATES.filter((s) => counts[s] > 0).map((s) => [s, counts[s]])
  const other = Object.entries(counts).filter(([s, n]) => !DELIVERY_STATES.includes(s) && n > 0)
  return [...known, ...other]
}
