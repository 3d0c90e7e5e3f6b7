import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { DeviceError, RemoteError } from '../errors.js';
import { errorFields } from './error-fields.js';

describe('errorFields', () => {
  it('keeps a ringvisor error\'s code, message and stack', () => {
    const e = new DeviceError('disk on fire');
    const f = errorFields(e);
    expect(f.code).toBe('RV_ERR_DEVICE');
    expect(f.message).toBe('disk on fire');
    expect(f.stack).toContain('error-fields.test.ts');
  });

  it('keeps the code of an error that came over RPC', () => {
    expect(errorFields(new RemoteError('RV_ERR_STORE', 'ENOENT /local/domain/9')).code).toBe('RV_ERR_STORE');
  });

  it('keeps a Node system error\'s code (ENOENT …)', () => {
    let caught: unknown;
    try {
      readFileSync('/nonexistent/ringvisor/file');
    } catch (e) {
      caught = e;
    }
    const f = errorFields(caught);
    expect(f.code).toBe('ENOENT');
    expect(f.message).toContain('/nonexistent/ringvisor/file');
    expect(f.stack).toBeDefined();
  });

  it('a thrown non-Error becomes its string form, with no code or stack', () => {
    expect(errorFields('plain string')).toEqual({ message: 'plain string' });
    expect(errorFields(42)).toEqual({ message: '42' });
    expect(errorFields(undefined)).toEqual({ message: 'undefined' });
  });

  it('a log line written with it carries the code and the stack', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    });
    const log = pino({ level: 'info' }, sink);
    log.warn({ err: errorFields(new DeviceError('queue stopped')) }, 'device failed');
    const line = JSON.parse(lines.join('')) as { msg: string; err: { code: string; message: string; stack: string } };
    expect(line.msg).toBe('device failed');
    expect(line.err.code).toBe('RV_ERR_DEVICE');
    expect(line.err.message).toBe('queue stopped');
    expect(line.err.stack).toMatch(/^DeviceError: queue stopped\n\s+at /);
  });
});
