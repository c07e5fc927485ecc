// What each role may see and do. The API enforces the same rules; the UI only hides what would fail.
export const ROLES = ['admin', 'operator', 'viewer', 'auditor']

export const ROLE_DESCRIPTIONS = {
  admin: 'everything: users, destinations, rules, settings, audit',
  operator: 'viewer + retry, cancel, replay, echo, downloads',
  viewer: 'dashboard, studies, destinations and queue (read only)',
  auditor: 'audit log only',
}

const READ = ['admin', 'operator', 'viewer']
const OPERATE = ['admin', 'operator']

export const CAPABILITIES = {
  dashboard: READ,
  studies: READ,
  destinations: READ,
  queue: READ,
  rules: ['admin'],
  users: ['admin'],
  settings: ['admin'],
  audit: ['admin', 'auditor'],
  downloadInstance: OPERATE,
  replay: OPERATE,
  retryCancel: OPERATE,
  echo: OPERATE,
  manageDestinations: ['admin'],
  manageRules: ['admin'],
}

export function can(roles, capability) {
  const allowed = CAPABILITIES[capability]
  if (!allowed || !Array.isArray(roles)) return false
  return roles.some((r) => allowed.includes(r))
}
