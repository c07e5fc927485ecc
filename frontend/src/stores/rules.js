import { defineStore } from 'pinia'
import { api } from '@/api/client'
import { errorMessage } from '@/api/errors'

export const CONDITION_OPS = [
  { value: 'equals', label: 'equals' },
  { value: 'glob', label: 'matches glob' },
  { value: 'regex', label: 'matches regex' },
  { value: 'present', label: 'is present' },
  { value: 'absent', label: 'is absent' },
]
export const VALUELESS_OPS = ['present', 'absent']
export const CONDITION_FIELDS = [
  'calling_ae',
  'called_ae',
  'source_ip',
  'modality',
  'sop_class',
  'StudyDescription',
  'SeriesDescription',
  'InstitutionName',
  'ReferringPhysicianName',
  'BodyPartExamined',
  'StationName',
]

export function newRule() {
  return {
    name: '',
    enabled: true,
    stop_processing: false,
    is_default: false,
    match: 'all',
    conditions: [{ field: 'modality', op: 'equals', value: '' }],
    destinations: [],
  }
}

/** The body of POST/PUT: everything but the id, and no value for present/absent. */
export function ruleBody(rule) {
  // eslint-disable-next-line no-unused-vars
  const { id, ...rest } = rule
  return {
    ...rest,
    conditions: (rule.conditions ?? []).map((c) => ({
      field: c.field.trim(),
      op: c.op,
      value: VALUELESS_OPS.includes(c.op) ? null : c.value,
    })),
  }
}

export const useRulesStore = defineStore('rules', {
  state: () => ({
    items: [],
    loading: false,
    loaded: false,
    error: null,
    reordering: false,
    testing: false,
    testResult: null,
    testError: null,
  }),
  actions: {
    async fetch({ silent = false } = {}) {
      if (!silent) this.loading = true
      try {
        const { data } = await api.get('/rules')
        this.items = [...(data ?? [])].sort((a, b) => a.position - b.position)
        this.error = null
        this.loaded = true
      } catch (e) {
        if (!silent || !this.loaded) this.error = errorMessage(e)
      } finally {
        this.loading = false
      }
    },
    async save(rule) {
      if (rule.id !== undefined && rule.id !== null) {
        const { data } = await api.put(`/rules/${rule.id}`, ruleBody(rule))
        const i = this.items.findIndex((r) => r.id === rule.id)
        if (i >= 0) this.items[i] = data ?? { ...rule }
        return data
      }
      const position = this.items.reduce((m, r) => Math.max(m, r.position ?? 0), 0) + 1
      const { data } = await api.post('/rules', ruleBody({ position, ...rule }))
      await this.fetch({ silent: true })
      return data
    },
    async remove(id) {
      await api.delete(`/rules/${id}`)
      this.items = this.items.filter((r) => r.id !== id)
    },
    setEnabled(rule, enabled) {
      return this.save({ ...rule, enabled })
    },
    /** Move a rule up (-1) or down (+1); shown at once, undone if the API refuses. */
    async move(id, delta) {
      const from = this.items.findIndex((r) => r.id === id)
      const to = from + delta
      if (from < 0 || to < 0 || to >= this.items.length) return false
      const previous = [...this.items]
      const next = [...this.items]
      const [rule] = next.splice(from, 1)
      next.splice(to, 0, rule)
      this.items = next.map((r, i) => ({ ...r, position: i + 1 }))
      this.reordering = true
      try {
        await api.post('/rules/reorder', { ids: next.map((r) => r.id) })
        return true
      } catch (e) {
        this.items = previous
        throw e
      } finally {
        this.reordering = false
      }
    },
    async test(file, { calling_ae = '', called_ae = '', source_ip = '' } = {}) {
      const form = new FormData()
      form.append('file', file)
      if (calling_ae) form.append('calling_ae', calling_ae)
      if (called_ae) form.append('called_ae', called_ae)
      if (source_ip) form.append('source_ip', source_ip)
      this.testing = true
      this.testResult = null
      this.testError = null
      try {
        const { data } = await api.post('/rules/test', form, { timeout: 120000 })
        this.testResult = data
      } catch (e) {
        this.testError = errorMessage(e)
      } finally {
        this.testing = false
      }
      return this.testResult
    },
  },
})
