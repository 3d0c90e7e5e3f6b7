import { ControlContract, RpcPeer, contractClient, connect, readSecretFile, secretFromEnv } from '@ringvisor/shared';
import { parseCommandArgs } from '../args.js';

/** `ringvisor health --url ws://…`: exit 0 when a dom0 answers an authenticated ping (for healthchecks). */
export async function health(argv: string[]): Promise<number> {
  const { values } = parseCommandArgs('health', { args: argv, options: { url: { type: 'string' }, 'secret-file': { type: 'string' }, timeout: { type: 'string' } } });
  const url = values.url ?? process.env.RINGVISOR_DOM0_URL ?? 'ws://127.0.0.1:7000';
  const secret = values['secret-file'] ? await readSecretFile(values['secret-file']) : secretFromEnv();
  const timeoutMs = Number(values.timeout ?? 3000);
  try {
    const link = await connect({ url, secret, role: 'control', domid: 0, timeoutMs });
    const peer = new RpcPeer(link, 'health');
    const info = await contractClient(ControlContract, peer).ping({}, { timeoutMs });
    process.stdout.write(`ok ${info.host}: ${info.ready}/${info.guests} guests ready\n`);
    link.close('done');
    return 0;
  } catch (e) {
    process.stderr.write(`unhealthy: ${(e as Error).message}\n`);
    return 1;
  }
}
