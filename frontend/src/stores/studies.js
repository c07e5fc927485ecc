import { defineStore } from 'pinia'
import { api } from '@/api/client'
import { errorMessage } from '@/api/errors'
import { localInputToIso } from '@/utils/format'
import { saveResponse } from '@/utils/download'

export const STUDY_FILTERS = [
  'patient_name',
  'patient_id',
  'modality',
  'accession_number',
  'calling_ae',
  'study_date_from',
  'study_date_to',
  'received_from',
  'received_to',
  'delivery_state',
]
export const STUDY_SORTS = ['last_received_at', 'study_date', 'patient_name', 'accession_number', 'modalities', 'calling_ae']
const DATETIME_FILTERS = ['received_from', 'received_to']
const PAGE_SIZES = [10, 25, 50, 100]

const emptyFilters = () => Object.fromEntries(STUDY_FILTERS.map((k) => [k, '']))

export const useStudiesStore = defineStore('studies', {
  state: () => ({
    filters: emptyFilters(),
    sort: 'last_received_at',
    order: 'desc',
    page: 1,
    pageSize: 25,
    items: [],
    total: 0,
    loading: false,
    loaded: false,
    error: null,
    seq: 0,
    study: null,
    studyLoading: false,
    studyError: null,
    studySeq: 0,
  }),
  getters: {
    pageCount: (s) => Math.max(1, Math.ceil(s.total / s.pageSize)),
    activeFilterCount: (s) => STUDY_FILTERS.filter((k) => s.filters[k]).length,
  },
  actions: {
    /** The list state as a route query (only what differs from the defaults). */
    toQuery() {
      const q = {}
      for (const k of STUDY_FILTERS) if (this.filters[k]) q[k] = this.filters[k]
      if (this.sort !== 'last_received_at') q.sort = this.sort
      if (this.order !== 'desc') q.order = this.order
      if (this.page !== 1) q.page = String(this.page)
      if (this.pageSize !== 25) q.page_size = String(this.pageSize)
      return q
    },
    fromQuery(query) {
      const one = (v) => (Array.isArray(v) ? v[0] : v) ?? ''
      this.filters = Object.fromEntries(STUDY_FILTERS.map((k) => [k, String(one(query[k]))]))
      this.sort = STUDY_SORTS.includes(one(query.sort)) ? one(query.sort) : 'last_received_at'
      this.order = one(query.order) === 'asc' ? 'asc' : 'desc'
      this.page = Math.max(1, parseInt(one(query.page), 10) || 1)
      const size = parseInt(one(query.page_size), 10)
      this.pageSize = PAGE_SIZES.includes(size) ? size : 25
    },
    resetFilters() {
      this.filters = emptyFilters()
      this.page = 1
    },
    /** Click on a column header: same column flips the order, a new one starts descending. */
    sortBy(column) {
      if (this.sort === column) this.order = this.order === 'asc' ? 'desc' : 'asc'
      else {
        this.sort = column
        this.order = column === 'patient_name' || column === 'accession_number' ? 'asc' : 'desc'
      }
      this.page = 1
    },
    params() {
      const p = {}
      for (const k of STUDY_FILTERS) {
        const v = this.filters[k]?.trim?.() ?? this.filters[k]
        if (v) p[k] = DATETIME_FILTERS.includes(k) ? localInputToIso(v) : v
      }
      return { ...p, sort: this.sort, order: this.order, page: this.page, page_size: this.pageSize }
    },
    /** Load the current page; `silent` keeps the table as it is while reloading (live updates). */
    async fetch({ silent = false } = {}) {
      const seq = ++this.seq
      if (!silent) this.loading = true
      try {
        const { data } = await api.get('/studies', { params: this.params() })
        if (seq !== this.seq) return
        this.items = data.items ?? []
        this.total = data.total ?? 0
        this.error = null
        this.loaded = true
      } catch (e) {
        if (seq !== this.seq) return
        if (!silent || !this.loaded) this.error = errorMessage(e)
      } finally {
        if (seq === this.seq) this.loading = false
      }
    },
    async fetchStudy(id, { silent = false } = {}) {
      const seq = ++this.studySeq
      if (!silent) {
        this.studyLoading = true
        if (String(this.study?.id) !== String(id)) this.study = null
      }
      try {
        const { data } = await api.get(`/studies/${encodeURIComponent(id)}`)
        if (seq !== this.studySeq) return
        this.study = data
        this.studyError = null
      } catch (e) {
        if (seq !== this.studySeq) return
        if (!silent || !this.study) this.studyError = errorMessage(e)
      } finally {
        if (seq === this.studySeq) this.studyLoading = false
      }
    },
    async replay(studyId, destinationId) {
      const { data } = await api.post(`/studies/${encodeURIComponent(studyId)}/replay`, {
        destination_id: destinationId,
      })
      return data?.queued ?? 0
    },
    async downloadInstance(instance) {
      const response = await api.get(`/instances/${encodeURIComponent(instance.id)}/file`, {
        responseType: 'blob',
        timeout: 0,
      })
      return saveResponse(response, `${instance.sop_instance_uid || instance.id}.dcm`)
    },
  },
})
