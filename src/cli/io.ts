// Output channels of the CLI, injectable for tests.
export interface CliIo {
  out(s: string): void;
  err(s: string): void;
}

export const processIo: CliIo = {
  out: (s) => void process.stdout.write(s),
  err: (s) => void process.stderr.write(s),
};
