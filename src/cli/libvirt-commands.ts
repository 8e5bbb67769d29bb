// ukai libvirt hook … (what libvirt's hooks/qemu runs) · ukai libvirt install-hook
import fs from 'node:fs'
import path from 'node:path'
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { runHook } from '../libvirt/hook'
import { checkHookConfig } from '../libvirt/hook-check'
import { HOOK_CONFIG_PATH_DEFAULT, HookConfig, formatHookConfig, loadHookConfig, parseHookConfig } from '../libvirt/hook-config'
import { createHookLogger } from '../libvirt/hook-log'
import { HOOKS_DIR_DEFAULT, installHook } from '../libvirt/install'
import { collect, zkAuthFileOf, zkConnectString } from './context'
import { printJson } from './output'
import { idOption, msOption, rateOption } from './parse'
import { tlsDirSetting, useTlsDir } from './tls-options'

// libvirt writes the XML to our stdin; read all of it (never wait on a terminal).
async function readStdin (limitMs: number): Promise<string> {
  if (process.stdin.isTTY === true) return ''
  return await new Promise((resolve) => {
    const chunks: Buffer[] = []
    const done = (): void => { clearTimeout(timer); resolve(Buffer.concat(chunks).toString('utf8')) }
    const timer = setTimeout(done, limitMs)
    process.stdin.on('data', (c: Buffer) => chunks.push(c))
    process.stdin.on('end', done)
    process.stdin.on('error', done)
  })
}

export function libvirtCommands (program: Command): void {
  const libvirt = program.command('libvirt').description('libvirt integration: the QEMU hook')

  libvirt.command('hook')
    .description('what libvirt\'s hooks/qemu runs: DOMAIN OPERATION SUB-OPERATION EXTRA, domain XML on stdin; always exits 0')
    .argument('<domain>').argument('<operation>').argument('<sub-operation>').argument('[extra]')
    // libvirt, not an operator, calls this, and it must never fail libvirt: extra words are ignored.
    .allowExcessArguments(true)
    .option('--config <file>', `hook settings (default: $UKAI_HOOK_CONF or ${HOOK_CONFIG_PATH_DEFAULT})`)
    .action(async (domain: string, operation: string, subOperation: string, extra: string | undefined, opts) => {
      const startedMs = Date.now()
      let config: HookConfig
      try {
        config = loadHookConfig(opts.config)
      } catch (err) {
        process.stderr.write(`ukai libvirt hook: ${(err as Error).message}; doing nothing\n`)
        await readStdin(1000)
        process.exit(0)
      }
      const log = createHookLogger(config.logFile)
      const deadlineMs = startedMs + config.timeoutMs
      // The hard limit: whatever is still waiting (ZooKeeper, a storage node) is abandoned.
      setTimeout(() => {
        log.error({ domain, op: operation, subOp: subOperation, timeoutMs: config.timeoutMs }, 'hook ran out of time; giving up, libvirt goes on')
        process.exit(0)
      }, config.timeoutMs).unref()
      const xml = await readStdin(Math.min(1000, config.timeoutMs))
      try {
        useTlsDir(config.tlsDir)  // libvirt scrubs the environment: the certificate comes from hook.conf
        await runHook({ domain, operation, subOperation, extra: extra ?? '-', xml }, { config, log, deadlineMs })
      } catch (err) {
        log.error({ domain, op: operation, err: String((err as Error)?.stack ?? err) }, 'hook failed; libvirt goes on')
      }
      log.info({ domain, op: operation, subOp: subOperation, tookMs: Date.now() - startedMs }, 'hook done')
      process.exit(0)
    })

  libvirt.command('install-hook')
    .description('install the QEMU hook (hooks/qemu.d/NAME on libvirt >= 6.5) and its config, never replacing a hook that is not ours')
    .option('--dir <dir>', 'libvirt\'s hooks directory', HOOKS_DIR_DEFAULT)
    .option('--name <name>', 'file name under qemu.d/', 'ukai')
    .option('--config <file>', 'where the hook reads its settings (kept when it exists: each flag given replaces its setting, the others stay)', HOOK_CONFIG_PATH_DEFAULT)
    .option('--host <name>', 'this hypervisor\'s agent name (ukai mount --host)', idOption('host name'))
    .option('--mount <dir>', 'the agent\'s mount point (repeatable)', collect)
    .option('--nbd-dir <dir>', 'the agent\'s NBD socket directory, ukai mount --nbd-dir (repeatable): NBD disks on DIR/<disk>.sock are handled like files on the mount', collect)
    .option('--log <file>', 'the hook\'s log file')
    .option('--timeout-ms <ms>', 'the most one hook call may take', msOption('--timeout-ms'))
    .option('--rate <MB/s>', 'cap the copy rate of relocations the hook starts', rateOption)
    .option('--force', 'replace a file of that name even if it is not UKAI\'s hook')
    .option('--json', 'print the result as JSON')
    .action(async (opts, cmd: Command) => {
      // Run again, it keeps hook.conf as it is, each flag given replacing its setting (a
      // repeatable one, its whole list); a new hook.conf starts from the defaults (and UKAI_ZK).
      const globals = cmd.optsWithGlobals() as { zk?: string, zkAuth?: string, insecureZk?: boolean, tlsDir?: string, insecure?: boolean }
      const existing = fs.existsSync(opts.config) ? loadHookConfig(opts.config) : null
      const base = existing ?? parseHookConfig('', '(defaults)')
      const cfg: HookConfig = {
        ...base,
        zk: globals.zk !== undefined || existing === null ? zkConnectString(cmd) : base.zk,
        zkAuthFile: globals.zkAuth !== undefined || globals.insecureZk === true || existing === null ? zkAuthFileOf(cmd) : base.zkAuthFile,
        tlsDir: globals.tlsDir !== undefined || globals.insecure === true || existing === null ? tlsDirSetting(cmd) : base.tlsDir,
        host: opts.host ?? base.host,
        mounts: opts.mount ?? base.mounts,
        nbdDirs: opts.nbdDir ?? base.nbdDirs,
        timeoutMs: opts.timeoutMs ?? base.timeoutMs,
        logFile: opts.log ?? base.logFile,
        rateBytesPerSec: opts.rate ?? base.rateBytesPerSec,
        source: opts.config
      }
      const text = formatHookConfig(cfg)
      // parse it back: a bad value is refused before anything is written
      parseHookConfig(text, opts.config)
      const configWritten = existing === null || text !== formatHookConfig(existing)
      if (configWritten) {
        fs.mkdirSync(path.dirname(opts.config), { recursive: true })
        fs.writeFileSync(opts.config, text)
      }
      if (!fs.existsSync(opts.dir) && opts.dir === HOOKS_DIR_DEFAULT) throw UkaiError.notFound(`${opts.dir} does not exist: is libvirt installed?`)
      const res = installHook({ dir: opts.dir, name: opts.name, config: opts.config, force: opts.force === true })
      const problems = await checkHookConfig(cfg)
      if (opts.json === true) { printJson({ ...res, config: opts.config, configWritten, settings: { ...cfg, source: undefined }, problems }); return }
      process.stdout.write(`${res.replaced ? 'updated' : 'installed'} ${res.path} (libvirt ${res.libvirtVersion}, ${res.layout} layout)\n`)
      process.stdout.write(`${configWritten ? (existing === null ? 'wrote' : 'updated') : 'kept'} ${opts.config}: zk ${cfg.zk}, host ${cfg.host}, mounts ${cfg.mounts.join(',') || '(every UKAI mount)'}\n`)
      for (const p of problems) process.stderr.write(`ukai: warning: ${p}\n`)
      if (problems.length === 0) process.stdout.write('checked: ZooKeeper reachable, the agent registered and running, its mount present\n')
      if (!res.replaced) process.stdout.write('libvirt looks for hooks when it starts: restart libvirtd (or virtqemud) once for it to take effect\n')
    })
}
