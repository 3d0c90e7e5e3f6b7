import { pino, type Logger } from 'pino';
import { isMainThread } from 'node:worker_threads';

export type { Logger };

/**
 * JSON lines to stderr by default; pretty when stderr is a TTY (and pino-pretty is present);
 * level from LOG_LEVEL (default `info`, `warn` under tests so their output stays readable).
 * Every runtime names itself so lines from threads and processes can be told apart.
 */
export function createLogger(runtime: string, bindings: Record<string, unknown> = {}): Logger {
  const level = process.env.LOG_LEVEL ?? (process.env.VITEST ? 'warn' : 'info');
  const pretty = isMainThread && process.stderr.isTTY && process.env.LOG_FORMAT !== 'json';
  const logger = pretty
    ? pino({
        level,
        transport: { target: 'pino-pretty', options: { destination: 2, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
      })
    : pino({ level }, pino.destination({ dest: 2, sync: true }));
  return logger.child({ runtime, ...bindings });
}

export { errorFields, type ErrorFields } from './error-fields.js';
export { RateLimitedLog, type RateLimitedLogOptions } from './rate-limit.js';
