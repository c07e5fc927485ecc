// The menu, in order; each item is shown only to roles with its capability.
export const NAV_ITEMS = [
  { name: 'dashboard', label: 'Dashboard', icon: 'dashboard', cap: 'dashboard' },
  { name: 'studies', label: 'Studies', icon: 'studies', cap: 'studies' },
  { name: 'queue', label: 'Queue', icon: 'queue', cap: 'queue' },
  { name: 'destinations', label: 'Destinations', icon: 'destinations', cap: 'destinations' },
  { name: 'rules', label: 'Routing rules', icon: 'rules', cap: 'rules' },
  { name: 'users', label: 'Users', icon: 'users', cap: 'users' },
  { name: 'settings', label: 'Settings', icon: 'settings', cap: 'settings' },
  { name: 'audit', label: 'Audit log', icon: 'audit', cap: 'audit' },
]
