import { main } from './src/toolstack/cli/main.ts';
process.exitCode = await main(process.argv.slice(2));
