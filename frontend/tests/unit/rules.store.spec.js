import { beforeEach, describe, expect, it } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { ruleBody, useRulesStore } from '@/stores/rules'
import { fail, mockApi, ok } from './helpers'

const rules = () => [
  { id: 'c', name: 'C', position: 3, enabled: true, conditions: [], destinations: [] },
  { id: 'a', name: 'A', position: 1, enabled: true, conditions: [], destinations: [] },
  { id: 'b', name: 'B', position: 2, enabled: true, conditions: [], destinations: [] },
]

describe('rules store', () => {
  beforeEach(() => setActivePinia(createPinia()))

  it('lists rules by position', async () => {
    mockApi({ 'GET /rules': ok(rules()) })
    const store = useRulesStore()
    await store.fetch()
    expect(store.items.map((r) => r.id)).toEqual(['a', 'b', 'c'])
  })

  it('moves a rule and sends the new order', async () => {
    const calls = mockApi({ 'GET /rules': ok(rules()), 'POST /rules/reorder': ok(null, 204) })
    const store = useRulesStore()
    await store.fetch()
    await store.move('c', -1)
    expect(store.items.map((r) => r.id)).toEqual(['a', 'c', 'b'])
    expect(calls.at(-1).data).toEqual({ ids: ['a', 'c', 'b'] })
    expect(await store.move('a', -1)).toBe(false)
  })

  it('puts the order back when the API refuses it', async () => {
    mockApi({ 'GET /rules': ok(rules()), 'POST /rules/reorder': fail(409, 'conflict') })
    const store = useRulesStore()
    await store.fetch()
    await expect(store.move('a', 1)).rejects.toBeTruthy()
    expect(store.items.map((r) => r.id)).toEqual(['a', 'b', 'c'])
  })

  it('builds request bodies without id and without values for present/absent', () => {
    const body = ruleBody({
      id: 4,
      name: 'x',
      conditions: [
        { field: ' modality ', op: 'equals', value: 'CT' },
        { field: 'StationName', op: 'absent', value: 'ignored' },
      ],
    })
    expect(body).not.toHaveProperty('id')
    expect(body.conditions).toEqual([
      { field: 'modality', op: 'equals', value: 'CT' },
      { field: 'StationName', op: 'absent', value: null },
    ])
  })

  it('toggles a rule with PUT of the whole rule', async () => {
    const calls = mockApi({ 'GET /rules': ok(rules()), 'PUT /rules/b': (req) => ok({ id: 'b', ...req.data }) })
    const store = useRulesStore()
    await store.fetch()
    await store.setEnabled(store.items[1], false)
    expect(calls.at(-1).data).toMatchObject({ name: 'B', enabled: false, position: 2 })
    expect(store.items[1].enabled).toBe(false)
  })

  it('posts a file to the rule tester', async () => {
    let form
    mockApi({ 'POST /rules/test': (req) => ((form = req.data), ok({ matched_rules: ['A'], destinations: ['PACS'] })) })
    const store = useRulesStore()
    const file = new File([new Uint8Array([1, 2, 3])], 'x.dcm')
    await store.test(file, { calling_ae: 'CT1' })
    expect(form).toBeInstanceOf(FormData)
    expect(form.get('calling_ae')).toBe('CT1')
    expect(form.has('called_ae')).toBe(false)
    expect(store.testResult.destinations).toEqual(['PACS'])
  })
})
