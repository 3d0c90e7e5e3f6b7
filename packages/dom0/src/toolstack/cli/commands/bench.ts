/** `ringvisor bench`: the benchmarks (npm run bench is the same program), loaded only when asked for. */
export async function bench(argv: string[]): Promise<number> {
  const suite = await import('../../../bench/cli.js');
  return suite.main(argv);
}
