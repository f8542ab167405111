// A process that takes the state lock of argv[2] as command argv[3], says
// "locked" on stdout, and holds it until stdin closes or it is killed (for
// the lock tests: a holder in another process, killable with -9).
import { acquireLock } from '../../src/host/lock.js';

const [stateDir, command, timeout] = process.argv.slice(2);
await acquireLock(stateDir as string, { timeoutS: Number(timeout ?? 10), command: command ?? 'test' });
process.stdout.write('locked\n');
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
setTimeout(() => process.exit(0), 60_000);
