import { describe, expect, it } from 'vitest'
import { mount, flushPromises } from '@vue/test-utils'
import RulesView from '@/views/RulesView.vue'
import RuleForm from '@/components/rules/RuleForm.vue'
import UsersView from '@/views/UsersView.vue'
import { fail, mockApi, ok, setupApp } from './helpers'

const rules = [
  { id: 1, name: 'CT', position: 1, enabled: true, stop_processing: false, is_default: false, match: 'all', conditions: [{ field: 'modality', op: 'equals', value: 'CT' }], destinations: ['PACS'] },
  { id: 2, name: 'Rest', position: 2, enabled: true, stop_processing: false, is_default: true, match: 'all', conditions: [], destinations: ['PACS'] },
]

describe('RuleForm', () => {
  it('builds conditions row by row and posts the rule', async () => {
    const calls = mockApi({
      'GET /destinations': ok([{ id: 1, name: 'PACS' }, { id: 2, name: 'Archive' }]),
      'POST /rules': (req) => ok({ id: 9, ...req.data }, 201),
      'GET /rules': ok([]),
    })
    const { global } = await setupApp({ path: '/rules' })
    const w = mount(RuleForm, { global })
    await flushPromises()
    await w.get('[data-testid=rule-name]').setValue('MR research')
    const first = w.get('[data-testid=condition-row]')
    await first.get('[data-testid=condition-field]').setValue('modality')
    await first.get('[data-testid=condition-value]').setValue('MR')
    await w.get('[data-testid=condition-add]').trigger('click')
    const second = w.findAll('[data-testid=condition-row]')[1]
    await second.get('[data-testid=condition-field]').setValue('(0008,1030)')
    await second.get('[data-testid=condition-op]').setValue('present')
    expect(second.find('[data-testid=condition-value]').exists()).toBe(false)
    await w.get('[data-testid=rule-match]').setValue('any')
    await w.findAll('[data-testid=rule-destination]')[0].setValue(true) // sorted: Archive, PACS
    await w.get('form').trigger('submit')
    await flushPromises()
    const post = calls.find((c) => c.method === 'POST')
    expect(post.data).toMatchObject({
      name: 'MR research',
      match: 'any',
      enabled: true,
      position: 1,
      destinations: ['Archive'],
      conditions: [
        { field: 'modality', op: 'equals', value: 'MR' },
        { field: '(0008,1030)', op: 'present', value: null },
      ],
    })
    expect(w.emitted('saved')).toHaveLength(1)
  })

  it('refuses incomplete rules with messages in place', async () => {
    const calls = mockApi({ 'GET /destinations': ok([{ id: 1, name: 'PACS' }]) })
    const { global } = await setupApp({ path: '/rules' })
    const w = mount(RuleForm, { global })
    await flushPromises()
    await w.get('[data-testid=condition-op]').setValue('regex')
    await w.get('[data-testid=condition-field]').setValue('StudyDescription')
    await w.get('[data-testid=condition-value]').setValue('([')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(w.text()).toContain('A name is required.')
    expect(w.text()).toContain('This is not a valid regular expression.')
    expect(w.text()).toContain('Choose at least one destination.')
    expect(calls.some((c) => c.method === 'POST')).toBe(false)
  })
})

describe('RulesView', () => {
  it('moves rules, toggles them and tests a file', async () => {
    const calls = mockApi({
      'GET /rules': ok(rules),
      'GET /destinations': ok([{ id: 1, name: 'PACS' }]),
      'POST /rules/reorder': ok(null, 204),
      'PUT /rules/1': (req) => ok({ id: 1, ...req.data }),
      'POST /rules/test': ok({ matched_rules: [], destinations: [] }),
    })
    const { global } = await setupApp({ path: '/rules' })
    const w = mount(RulesView, { global, attachTo: document.body })
    await flushPromises()
    const rows = () => w.findAll('[data-testid=rule-row]').map((r) => r.attributes('data-name'))
    expect(rows()).toEqual(['CT', 'Rest'])
    expect(w.findAll('[data-testid=rule-up]')[0].attributes('disabled')).toBeDefined()
    await w.findAll('[data-testid=rule-up]')[1].trigger('click')
    await flushPromises()
    expect(rows()).toEqual(['Rest', 'CT'])
    expect(calls.find((c) => c.url === '/rules/reorder').data).toEqual({ ids: [2, 1] })
    // focus stays on the moved rule
    expect(document.activeElement?.getAttribute('data-move')).toBe('2-down')

    await w.findAll('[data-testid=rule-enabled]')[1].trigger('click')
    await flushPromises()
    expect(calls.find((c) => c.method === 'PUT').data.enabled).toBe(false)

    const input = w.get('[data-testid=tester-file]')
    Object.defineProperty(input.element, 'files', { value: [new File(['x'], 'ct.dcm')] })
    await input.trigger('change')
    await w.get('[data-testid=rule-tester] form').trigger('submit')
    await flushPromises()
    expect(w.get('[data-testid=tester-nomatch]').text()).toContain('No rule matches')
    w.unmount()
  })

  it('shows an empty state', async () => {
    mockApi({ 'GET /rules': ok([]) })
    const { global } = await setupApp({ path: '/rules' })
    const w = mount(RulesView, { global })
    await flushPromises()
    expect(w.get('[data-testid=empty]').text()).toContain('No routing rules')
  })
})

describe('UsersView', () => {
  it('lists users with their state and disables one after confirmation', async () => {
    const future = new Date(Date.now() + 600000).toISOString()
    const calls = mockApi({
      'GET /users': ok([
        { id: 1, username: 'alice', roles: ['admin'], disabled: false, locked_until: null, created_at: new Date().toISOString() },
        { id: 2, username: 'bob', roles: ['viewer'], disabled: false, locked_until: future, created_at: new Date().toISOString() },
      ]),
      'PATCH /users/2': fail(409, 'Cannot disable the last viewer'),
    })
    const { global } = await setupApp({ path: '/users' })
    const { default: ConfirmDialog } = await import('@/components/ConfirmDialog.vue')
    const { useUiStore } = await import('@/stores/ui')
    const w = mount(UsersView, { global, attachTo: document.body })
    const dialog = mount(ConfirmDialog, { global, attachTo: document.body })
    await flushPromises()
    const [alice, bob] = w.findAll('[data-testid=user-row]')
    expect(alice.text()).toContain('(you)')
    expect(alice.get('[data-testid=user-disable]').attributes('disabled')).toBeDefined()
    expect(bob.text()).toContain('Locked until')
    await bob.get('[data-testid=user-disable]').trigger('click')
    await flushPromises()
    await dialog.get('[data-testid=confirm-ok]').trigger('click')
    await flushPromises()
    expect(calls.at(-1)).toMatchObject({ method: 'PATCH', data: { disabled: true } })
    expect(useUiStore().toasts.at(-1)).toMatchObject({ type: 'error', message: expect.stringContaining('Cannot disable the last viewer') })
    w.unmount()
    dialog.unmount()
  })
})
