// The provider error code of a failed answer: Twilio's numeric code, Vapi's error class, and a
// bounded label set whatever the upstream sends.
import { describe, expect, it } from 'vitest';
import { classifyUpstreamError, CodeBound, MAX_CODES_PER_UPSTREAM } from '../../src/upstream-errors.js';

const j = (v: unknown) => Buffer.from(JSON.stringify(v));

describe('classifyUpstreamError', () => {
  it("reads Twilio's numeric code and Vapi's error class, never the message text", () => {
    expect(classifyUpstreamError(j({ code: 20429, message: 'Too Many Requests', status: 429 }))).toBe('20429');
    expect(classifyUpstreamError(j({ message: "Couldn't Get Assistant.", error: 'Not Found', statusCode: 404 }))).toBe('not_found');
    expect(classifyUpstreamError(j({ message: ['assistantId must be a UUID'], error: 'Bad Request', statusCode: 400 }))).toBe('validation');
    expect(classifyUpstreamError(j({ message: 'call +15555550100 failed', error: 'whatever +15555550100' }))).toBe('other');
  });

  it('treats odd bodies as other or unparsed', () => {
    expect(classifyUpstreamError(Buffer.from('<html>502</html>'))).toBe('unparsed');
    expect(classifyUpstreamError(j({ code: '21211' }))).toBe('other');
    expect(classifyUpstreamError(j({ code: 1e12 }))).toBe('other');
    expect(classifyUpstreamError(j([1, 2]))).toBe('other');
    expect(classifyUpstreamError(undefined)).toBeUndefined();
  });

  it('bounds the codes kept per upstream', () => {
    const b = new CodeBound();
    for (let i = 0; i < MAX_CODES_PER_UPSTREAM; i++) expect(b.bound('twilio', String(i))).toBe(String(i));
    expect(b.bound('twilio', '99999')).toBe('other');
    expect(b.bound('twilio', '3')).toBe('3');
    expect(b.bound('vapi', 'bad_request')).toBe('bad_request');
  });
});
