/**
 * A getopt_long engine that behaves like glibc's (2.36, the one qemu-img runs on here): argument
 * permutation (unless '+' or POSIXLY_CORRECT), in-order positionals ('-'), clustered short
 * options, attached and separate values, unambiguous abbreviations of long options, `--`, and the
 * exact diagnostics glibc prints. qemu-img's error texts depend on glibc's state (qemu 7.2 prints
 * argv[optind - 1]), so the state — a permuted argv and optind — is exposed as glibc keeps it.
 *
 * Written from the documented/observed behaviour of getopt_long; no glibc code is copied.
 */

/** One long option as qemu-img declares it (`struct option`). */
export interface LongOption {
  name: string;
  /** 0 no argument, 1 required, 2 optional (glibc's has_arg). */
  hasArg: 0 | 1 | 2;
  /**
   * What getopt returns for it (glibc's val): a short option letter, or a name for options that
   * only exist in long form. Two entries with the same hasArg and val are the same option as far
   * as glibc's ambiguity check goes.
   */
  val: string;
}

/** What one call of `next()` produced. */
export type GetoptResult =
  | { type: 'end' }
  /** A short option letter or a long option's val; `arg` is glibc's optarg. */
  | { type: 'option'; val: string; arg?: string; long?: LongOption }
  /** An option only instar knows (matched by exact name, never abbreviated). */
  | { type: 'extra'; name: string; arg?: string }
  /** A positional handed back in order ('-' ordering), glibc's return value 1. */
  | { type: 'positional'; arg: string }
  /**
   * glibc's '?' (or ':' for a missing argument when the optstring starts with ':'). `message` is
   * what glibc prints when errors are not silenced, including the argv[0] prefix and newline.
   */
  | { type: 'error'; code: '?' | ':'; message: string };

export interface GetoptConfig {
  /** The optstring exactly as qemu-img passes it, including a leading '+', '-' or ':'. */
  optstring: string;
  long: readonly LongOption[];
  /** instar's own long options: exact names only, never part of abbreviation matching. */
  extras?: readonly { name: string; hasArg: 0 | 1 }[];
  /** Whether POSIXLY_CORRECT is set (glibc then stops at the first non-option). */
  posixlyCorrect?: boolean;
}

type Ordering = 'permute' | 'require-order' | 'return-in-order';

export class Getopt {
  /** argv as glibc leaves it (permuted in place); argv[0] is the program or command name. */
  readonly argv: string[];
  optind = 1;
  optopt = '';
  private nextchar: string | null = null;
  private firstNonopt = 1;
  private lastNonopt = 1;
  private readonly ordering: Ordering;
  private readonly shorts: string;
  private readonly printErrors: boolean;

  constructor(argv: readonly string[], private readonly config: GetoptConfig) {
    this.argv = [...argv];
    let spec = config.optstring;
    if (spec.startsWith('-')) {
      this.ordering = 'return-in-order';
      spec = spec.slice(1);
    } else if (spec.startsWith('+')) {
      this.ordering = 'require-order';
      spec = spec.slice(1);
    } else {
      this.ordering = config.posixlyCorrect ? 'require-order' : 'permute';
    }
    this.printErrors = !spec.startsWith(':');
    this.shorts = spec;
  }

  /** The operands left once `next()` returned 'end' (glibc: argv[optind..]). */
  rest(): string[] {
    return this.argv.slice(this.optind);
  }

  private isNonOption(i: number): boolean {
    const a = this.argv[i];
    return a[0] !== '-' || a.length === 1;
  }

  /** Moves the skipped non-options [firstNonopt, lastNonopt) after the options up to optind. */
  private exchange(): void {
    const nonopts = this.argv.slice(this.firstNonopt, this.lastNonopt);
    const opts = this.argv.slice(this.lastNonopt, this.optind);
    this.argv.splice(this.firstNonopt, this.optind - this.firstNonopt, ...opts, ...nonopts);
    this.firstNonopt += this.optind - this.lastNonopt;
    this.lastNonopt = this.optind;
  }

  next(): GetoptResult {
    const argc = this.argv.length;
    if (this.nextchar === null || this.nextchar === '') {
      if (this.lastNonopt > this.optind) this.lastNonopt = this.optind;
      if (this.firstNonopt > this.optind) this.firstNonopt = this.optind;
      if (this.ordering === 'permute') {
        if (this.firstNonopt !== this.lastNonopt && this.lastNonopt !== this.optind) this.exchange();
        else if (this.lastNonopt !== this.optind) this.firstNonopt = this.optind;
        while (this.optind < argc && this.isNonOption(this.optind)) this.optind++;
        this.lastNonopt = this.optind;
      }
      if (this.optind !== argc && this.argv[this.optind] === '--') {
        this.optind++;
        if (this.firstNonopt !== this.lastNonopt && this.lastNonopt !== this.optind) this.exchange();
        else if (this.firstNonopt === this.lastNonopt) this.firstNonopt = this.optind;
        this.lastNonopt = argc;
        this.optind = argc;
      }
      if (this.optind === argc) {
        if (this.firstNonopt !== this.lastNonopt) this.optind = this.firstNonopt;
        return { type: 'end' };
      }
      if (this.isNonOption(this.optind)) {
        if (this.ordering === 'require-order') return { type: 'end' };
        return { type: 'positional', arg: this.argv[this.optind++] };
      }
      const element = this.argv[this.optind];
      if (element[1] === '-') {
        this.nextchar = element.slice(2);
        return this.longOption();
      }
      this.nextchar = element.slice(1);
    }
    return this.shortOption();
  }

  private fail(code: '?' | ':', text: string): GetoptResult {
    return { type: 'error', code, message: this.printErrors ? `${this.argv[0]}: ${text}\n` : '' };
  }

  private shortOption(): GetoptResult {
    const text = this.nextchar as string;
    const c = text[0];
    this.nextchar = text.slice(1);
    if (this.nextchar === '') this.optind++;
    const at = this.shorts.indexOf(c);
    if (at < 0 || c === ':' || c === ';') {
      this.optopt = c;
      return this.fail('?', `invalid option -- '${c}'`);
    }
    if (this.shorts[at + 1] !== ':') return { type: 'option', val: c };
    if (this.shorts[at + 2] === ':') {
      // Optional argument: only an attached one counts.
      const arg = this.nextchar !== '' ? this.nextchar : undefined;
      if (arg !== undefined) this.optind++;
      this.nextchar = null;
      return { type: 'option', val: c, arg };
    }
    let arg: string;
    if (this.nextchar !== '') {
      arg = this.nextchar;
      this.optind++;
    } else if (this.optind === this.argv.length) {
      this.nextchar = null;
      this.optopt = c;
      return this.fail(this.printErrors ? '?' : ':', `option requires an argument -- '${c}'`);
    } else {
      arg = this.argv[this.optind++];
    }
    this.nextchar = null;
    return { type: 'option', val: c, arg };
  }

  private longOption(): GetoptResult {
    const text = this.nextchar as string;
    const eq = text.indexOf('=');
    const name = eq < 0 ? text : text.slice(0, eq);
    const attached = eq < 0 ? undefined : text.slice(eq + 1);
    const longs = this.config.long;

    const extra = this.config.extras?.find((x) => x.name === name);
    let found: LongOption | undefined = longs.find((o) => o.name === name);
    if (!found && extra) return this.takeExtra(extra, attached);
    if (!found) {
      // Abbreviations: ambiguous only when a further match differs from the first in has_arg or val.
      const ambiguous = new Set<number>();
      let first = -1;
      longs.forEach((o, i) => {
        if (!o.name.startsWith(name)) return;
        if (first < 0) first = i;
        else if (longs[first].hasArg !== o.hasArg || longs[first].val !== o.val) ambiguous.add(first).add(i);
      });
      if (ambiguous.size > 0) {
        const list = longs.filter((_, i) => ambiguous.has(i)).map((o) => ` '--${o.name}'`).join('');
        this.nextchar = '';
        this.optind++;
        this.optopt = '';
        return this.fail('?', `option '--${text}' is ambiguous; possibilities:${list}`);
      }
      if (first >= 0) found = longs[first];
    }
    if (!found) {
      this.nextchar = null;
      this.optind++;
      this.optopt = '';
      return this.fail('?', `unrecognized option '--${text}'`);
    }
    this.optind++;
    this.nextchar = null;
    let arg: string | undefined;
    if (attached !== undefined) {
      if (found.hasArg === 0) {
        this.optopt = found.val;
        return this.fail('?', `option '--${found.name}' doesn't allow an argument`);
      }
      arg = attached;
    } else if (found.hasArg === 1) {
      if (this.optind < this.argv.length) arg = this.argv[this.optind++];
      else {
        this.optopt = found.val;
        return this.fail(this.printErrors ? '?' : ':', `option '--${found.name}' requires an argument`);
      }
    }
    return { type: 'option', val: found.val, arg, long: found };
  }

  /** instar's options follow the same value rules (and diagnostics) as a long option. */
  private takeExtra(extra: { name: string; hasArg: 0 | 1 }, attached: string | undefined): GetoptResult {
    this.optind++;
    this.nextchar = null;
    if (attached !== undefined && extra.hasArg === 0) return this.fail('?', `option '--${extra.name}' doesn't allow an argument`);
    if (attached !== undefined || extra.hasArg === 0) return { type: 'extra', name: extra.name, arg: attached };
    if (this.optind < this.argv.length) return { type: 'extra', name: extra.name, arg: this.argv[this.optind++] };
    return this.fail(this.printErrors ? '?' : ':', `option '--${extra.name}' requires an argument`);
  }
}
