import { describe, expect, it } from 'vitest'
import { can } from '@/permissions'
import { setupApp } from './helpers'

describe('permissions', () => {
  it('follows the role matrix', () => {
    expect(can(['viewer'], 'studies')).toBe(true)
    expect(can(['viewer'], 'retryCancel')).toBe(false)
    expect(can(['operator'], 'retryCancel')).toBe(true)
    expect(can(['operator'], 'manageDestinations')).toBe(false)
    expect(can(['auditor'], 'dashboard')).toBe(false)
    expect(can(['auditor'], 'audit')).toBe(true)
    expect(can(['admin'], 'users')).toBe(true)
    expect(can(['viewer', 'auditor'], 'audit')).toBe(true)
    expect(can(undefined, 'studies')).toBe(false)
  })
})

describe('router guard', () => {
  it('sends anonymous users to the login page, remembering where they were going', async () => {
    const { router } = await setupApp({ signedIn: false, path: '/queue?state=dead' })
    expect(router.currentRoute.value.name).toBe('login')
    expect(router.currentRoute.value.query.redirect).toBe('/queue?state=dead')
  })

  it('keeps a viewer out of admin pages', async () => {
    const { router } = await setupApp({ roles: ['viewer'], path: '/users' })
    expect(router.currentRoute.value.name).toBe('forbidden')
    await router.push('/settings')
    expect(router.currentRoute.value.name).toBe('forbidden')
    await router.push('/studies')
    expect(router.currentRoute.value.name).toBe('studies')
  })

  it('gives an auditor only the audit log', async () => {
    const { router } = await setupApp({ roles: ['auditor'], path: '/' })
    expect(router.currentRoute.value.name).toBe('audit')
    await router.push('/dashboard')
    expect(router.currentRoute.value.name).toBe('forbidden')
  })

  it('sends a signed-in user away from the login page', async () => {
    const { router } = await setupApp({ roles: ['operator'], path: '/login' })
    expect(router.currentRoute.value.name).toBe('dashboard')
  })
})
