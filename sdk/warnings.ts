/**
 * Warnings: a setting the SDK accepts but that changes nothing in this run is said, not swallowed.
 * They go through Node's process.emitWarning (type 'QuantbookWarning', a stable code), so the CLI
 * prints them on stderr and programs and tests can listen with process.on('warning').
 */
export const WARNING_TYPE = 'QuantbookWarning';

export function warn(code: string, message: string): void {
  process.emitWarning(message, { type: WARNING_TYPE, code });
}
