// X-Request-Id: a valid incoming value is kept, anything else is replaced by a minted UUID.
import { describe, expect, it } from 'vitest';
import { isValidRequestId, requestId } from '../../../src/stages/correlation.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('isValidRequestId', () => {
  const rows: { desc: string; value: unknown; valid: boolean }[] = [
    { desc: 'a UUID', value: '3f2504e0-4f89-41d3-9a0c-0305e82c3301', valid: true },
    { desc: 'a short token', value: 'abc', valid: true },
    { desc: 'one character', value: 'a', valid: true },
    { desc: 'the allowed punctuation', value: 'a.b_c:d=e+f/g@h-i', valid: true },
    { desc: 'a base64 value', value: 'dGVzdA+/==', valid: true },
    { desc: 'exactly 128 characters', value: 'a'.repeat(128), valid: true },
    { desc: '129 characters', value: 'a'.repeat(129), valid: false },
    { desc: 'empty', value: '', valid: false },
    { desc: 'a space inside', value: 'abc def', valid: false },
    { desc: 'a leading space', value: ' abc', valid: false },
    { desc: 'a trailing space', value: 'abc ', valid: false },
    { desc: 'a tab', value: 'abc\tdef', valid: false },
    { desc: 'CR LF (header/log injection)', value: 'abc\r\nX-Evil: 1', valid: false },
    { desc: 'a trailing LF', value: 'abc\n', valid: false },
    { desc: 'a leading LF', value: '\nabc', valid: false },
    { desc: 'a lone CR', value: 'abc\rdef', valid: false },
    { desc: 'a NUL byte', value: 'abc\u0000', valid: false },
    { desc: 'a quote (breaks JSON logs in naive sinks)', value: 'abc"def', valid: false },
    { desc: 'a comma (list separator)', value: 'a,b', valid: false },
    { desc: 'non-ASCII letters', value: 'été', valid: false },
    { desc: 'an emoji', value: 'id-🙂', valid: false },
    { desc: 'a unicode line separator', value: 'a\u2028b', valid: false },
    { desc: 'an array (repeated header)', value: ['abc', 'def'], valid: false },
    { desc: 'an array of one', value: ['abc'], valid: false },
    { desc: 'undefined (absent)', value: undefined, valid: false },
    { desc: 'a number', value: 123, valid: false },
  ];
  it.each(rows)('$desc → $valid', ({ value, valid }) => {
    expect(isValidRequestId(value)).toBe(valid);
  });
});

describe('requestId', () => {
  it('keeps a valid incoming id', () => {
    expect(requestId('req-42')).toBe('req-42');
  });

  const invalid: { desc: string; value: string | string[] | undefined }[] = [
    { desc: 'absent', value: undefined },
    { desc: 'too long', value: 'x'.repeat(129) },
    { desc: 'with CR/LF', value: 'a\r\nb' },
    { desc: 'repeated', value: ['a', 'b'] },
    { desc: 'empty', value: '' },
  ];
  it.each(invalid)('mints a UUID when the incoming id is $desc', ({ value }) => {
    const id = requestId(value);
    expect(id).toMatch(UUID);
    expect(id).not.toBe(value);
  });

  it('mints a different id each time', () => {
    const ids = new Set(Array.from({ length: 100 }, () => requestId(undefined)));
    expect(ids.size).toBe(100);
  });
});
