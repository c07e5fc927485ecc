import { afterEach, beforeEach } from 'vitest'
import { api } from '@/api/client'

const realAdapter = api.defaults.adapter

beforeEach(() => {
  localStorage.clear()
  document.documentElement.className = ''
  document.body.innerHTML = ''
})

afterEach(() => {
  api.defaults.adapter = realAdapter
})
