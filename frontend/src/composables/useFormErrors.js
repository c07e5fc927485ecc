import { reactive, ref } from 'vue'
import { describeError } from '@/api/errors'

/** Form-level message and per-field messages from an API error (422 → fields by name). */
export function useFormErrors() {
  const message = ref('')
  const fields = reactive({})
  function clear() {
    message.value = ''
    for (const k of Object.keys(fields)) delete fields[k]
  }
  function set(error) {
    clear()
    const d = describeError(error)
    message.value = d?.message ?? ''
    Object.assign(fields, d?.fields ?? {})
    return d
  }
  return { message, fields, clear, set }
}
