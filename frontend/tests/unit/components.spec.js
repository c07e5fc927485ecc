import { describe, expect, it } from 'vitest'
import { mount, flushPromises } from '@vue/test-utils'
import StateBadge from '@/components/StateBadge.vue'
import DeliveryCounts from '@/components/DeliveryCounts.vue'
import PaginationBar from '@/components/PaginationBar.vue'
import FormField from '@/components/FormField.vue'
import ToggleSwitch from '@/components/ToggleSwitch.vue'
import SortHeader from '@/components/SortHeader.vue'
import DiskGauge from '@/components/dashboard/DiskGauge.vue'
import ConfirmDialog from '@/components/ConfirmDialog.vue'
import ThemeToggle from '@/components/ThemeToggle.vue'
import AppNav from '@/components/AppNav.vue'
import { useUiStore } from '@/stores/ui'
import { setupApp } from './helpers'

describe('small components', () => {
  it('StateBadge shows a label and count, not only a colour', () => {
    const w = mount(StateBadge, { props: { state: 'dead', count: 3 } })
    expect(w.text()).toBe('3 dead letter')
    expect(w.attributes('data-state')).toBe('dead')
  })

  it('DeliveryCounts lists non-zero states and says when there is nothing', () => {
    const w = mount(DeliveryCounts, { props: { counts: { sent: 2, retry: 0, dead: 1 } } })
    expect(w.findAll('[data-testid=state-badge]').map((b) => b.attributes('data-state'))).toEqual(['dead', 'sent'])
    expect(mount(DeliveryCounts, { props: { counts: {} } }).text()).toBe('no deliveries')
  })

  it('PaginationBar shows the range and emits page changes', async () => {
    const w = mount(PaginationBar, { props: { page: 2, pageSize: 25, total: 57 } })
    expect(w.text()).toContain('Showing 26–50 of 57')
    expect(w.text()).toContain('Page 2 of 3')
    await w.get('[data-testid=page-next]').trigger('click')
    await w.get('[data-testid=page-prev]').trigger('click')
    expect(w.emitted('update:page')).toEqual([[3], [1]])
    const last = mount(PaginationBar, { props: { page: 3, pageSize: 25, total: 57 } })
    expect(last.get('[data-testid=page-next]').attributes('disabled')).toBeDefined()
  })

  it('FormField ties the label, the control and the error together', () => {
    const w = mount(FormField, {
      props: { label: 'Port', error: 'Too large' },
      slots: { default: `<template #default="f"><input :id="f.id" :aria-describedby="f.describedby" :aria-invalid="f.invalid" /></template>` },
    })
    const input = w.get('input')
    expect(w.get('label').attributes('for')).toBe(input.attributes('id'))
    expect(input.attributes('aria-invalid')).toBe('true')
    expect(w.get(`#${input.attributes('aria-describedby')}`).text()).toBe('Too large')
  })

  it('ToggleSwitch is a labelled switch', async () => {
    const w = mount(ToggleSwitch, { props: { modelValue: true, label: 'Enable PACS' } })
    const b = w.get('button')
    expect(b.attributes()).toMatchObject({ role: 'switch', 'aria-checked': 'true', 'aria-label': 'Enable PACS' })
    await b.trigger('click')
    expect(w.emitted('update:modelValue')).toEqual([[false]])
  })

  it('SortHeader exposes the sort order', () => {
    const w = mount(SortHeader, { props: { column: 'study_date', label: 'Date', sort: 'study_date', order: 'asc' } })
    expect(w.get('th').attributes('aria-sort')).toBe('ascending')
    const other = mount(SortHeader, { props: { column: 'x', label: 'X', sort: 'study_date', order: 'asc' } })
    expect(other.get('th').attributes('aria-sort')).toBe('none')
  })

  it('DiskGauge warns above the watermark', () => {
    const w = mount(DiskGauge, { props: { usedPercent: 93.2, watermarkPercent: 90 } })
    expect(w.get('[role=meter]').attributes('aria-valuenow')).toBe('93.2')
    expect(w.text()).toContain('Above the watermark')
  })
})

describe('app-level components', () => {
  it('the menu shows only what the roles allow', async () => {
    const viewer = await setupApp({ roles: ['viewer'], path: '/studies' })
    const w = mount(AppNav, { global: viewer.global })
    const names = w.findAll('a').map((a) => a.text())
    expect(names).toEqual(['Dashboard', 'Studies', 'Queue', 'Destinations'])
    expect(w.get('[data-testid=nav-studies]').attributes('aria-current')).toBe('page')

    const auditor = await setupApp({ roles: ['auditor'], path: '/audit' })
    expect(mount(AppNav, { global: auditor.global }).findAll('a').map((a) => a.text())).toEqual(['Audit log'])

    const admin = await setupApp({ roles: ['admin'], path: '/' })
    expect(mount(AppNav, { global: admin.global }).findAll('a')).toHaveLength(8)
  })

  it('the confirm dialog answers the pending question', async () => {
    const { global } = await setupApp()
    const w = mount(ConfirmDialog, { global, attachTo: document.body })
    const ui = useUiStore()
    const answer = ui.confirm({ title: 'Delete rule', message: 'Delete it?', confirmLabel: 'Delete', danger: true })
    await flushPromises()
    expect(w.get('[data-testid=confirm-message]').text()).toBe('Delete it?')
    expect(w.get('[data-testid=confirm-ok]').classes()).toContain('btn-danger')
    await w.get('[data-testid=confirm-ok]').trigger('click')
    expect(await answer).toBe(true)
    const second = ui.confirm({ title: 'Again', message: '?' })
    await flushPromises()
    await w.get('[data-testid=confirm-cancel]').trigger('click')
    expect(await second).toBe(false)
    w.unmount()
  })

  it('the theme toggle cycles system → light → dark', async () => {
    const { global } = await setupApp()
    const w = mount(ThemeToggle, { global })
    const ui = useUiStore()
    expect(w.attributes('aria-label')).toMatch(/Theme: System/)
    await w.trigger('click')
    expect(ui.theme).toBe('light')
    await w.trigger('click')
    expect(ui.theme).toBe('dark')
    expect(document.documentElement.classList.contains('dark')).toBe(true)
  })
})
