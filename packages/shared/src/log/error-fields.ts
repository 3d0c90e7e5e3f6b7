/** What a log line says about an error: its stable code (RV_ERR_…, or Node's E…), message and stack. */
export interface ErrorFields {
  code?: string;
  message: string;
  stack?: string;
}

/**
 * An error as log fields, so a line keeps the code a reader greps for and the stack that says
 * where it came from. Log it under `err`: `log.warn({ err: errorFields(e), … }, 'what failed')`.
 * A thrown non-Error becomes its string form.
 */
export function errorFields(e: unknown): ErrorFields {
  if (!(e instanceof Error)) return { message: String(e) };
  const code = (e as { code?: unknown }).code;
  return {
    ...(typeof code === 'string' ? { code } : {}),
    message: e.message,
    ...(e.stack !== undefined ? { stack: e.stack } : {}),
  };
}
