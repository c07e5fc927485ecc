import { describe, expect, it } from 'vitest'
import { describeError, fieldNameOf } from '@/api/errors'

const http = (status, data) => ({ isAxiosError: true, response: { status, data } })

describe('describeError', () => {
  it('uses the API detail string', () => {
    expect(describeError(http(423, { detail: 'Account locked until 2026-01-01T10:00:00Z' })).message).toBe(
      'Account locked until 2026-01-01T10:00:00Z',
    )
  })

  it('maps FastAPI 422 errors to fields by the last name in loc', () => {
    const d = describeError(
      http(422, {
        detail: [
          { loc: ['body', 'port'], msg: 'Input should be less than 65536' },
          { loc: ['body', 'allowed_callers', 0, 'networks', 1], msg: 'not a network' },
        ],
      }),
    )
    expect(d.fields).toEqual({ port: 'Input should be less than 65536', networks: 'not a network' })
    expect(d.message).toContain('port')
  })

  it('explains network failures and server errors', () => {
    expect(describeError({ isAxiosError: true, code: 'ERR_NETWORK' }).message).toMatch(/Cannot reach/)
    expect(describeError(http(502, '<html>')).message).toMatch(/502/)
    expect(describeError(http(403, {})).message).toMatch(/permission/)
  })

  it('finds the field name in a loc', () => {
    expect(fieldNameOf(['body', 'name'])).toBe('name')
    expect(fieldNameOf(['query', 3])).toBe('query')
    expect(fieldNameOf([])).toBeNull()
  })
})
