// ZooKeeper credentials: the file every daemon and the CLI read, and the ACL UKAI puts on every
// znode it creates. Digest auth (ZooKeeper's built-in scheme): the client sends "user:password"
// after connecting; an ACL entry names `digest:user:base64(sha1(user:password))` and grants ALL.
// Nothing else is granted: an unauthenticated client (or one with another password) can neither
// read (the nodes-alive local-read tokens are secrets) nor create, change, delete or re-ACL
// anything under /ukai. World-readable "harmless" znodes were not worth the second rule.
//
// The file: one line `user:password`, mode 0600 (0400 also fine); group/world-readable files are
// refused, like ssh refuses a readable private key. Digest auth sends the password in clear on
// the ZooKeeper connection: in production put ZooKeeper's TLS in front (docs/security.md).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { UkaiError } from '../errors'

export interface ZkAuth { readonly user: string, readonly password: string, readonly file: string }

// Where daemons and the CLI look when neither --zk-auth nor UKAI_ZK_AUTH names a file.
export const ZK_AUTH_FILE_DEFAULT = '/etc/ukai/zk-auth'
export const ZK_AUTH_FILE_ENV = 'UKAI_ZK_AUTH'
const ZK_AUTH_FILE_BYTES_MAX = 4096
const ZK_USER_DEFAULT = 'ukai'
const ZK_PASSWORD_BYTES = 24 // 192 random bits, base64url: 32 characters
const USER_RE = /^[A-Za-z0-9_.-]{1,64}$/

// `digest` ACL id of these credentials, as ZooKeeper's DigestAuthenticationProvider computes it.
export function zkDigestId (user: string, password: string): string {
  return `${user}:${crypto.createHash('sha1').update(`${user}:${password}`).digest('base64')}`
}

// Reads and checks a credentials file: a clear BAD_ARGUMENT naming the file and what is wrong.
export function readZkAuthFile (file: string): ZkAuth {
  const abs = path.resolve(file)
  let st: fs.Stats
  try {
    st = fs.statSync(abs)
  } catch (err) {
    throw UkaiError.badArgument(`ZooKeeper credentials file ${abs}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : (err as Error).message}`)
  }
  if (!st.isFile()) throw UkaiError.badArgument(`ZooKeeper credentials file ${abs} is not a regular file`)
  if ((st.mode & 0o077) !== 0) {
    throw UkaiError.badArgument(`ZooKeeper credentials file ${abs} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: it holds a password and must be readable by its owner only (chmod 600 ${abs})`)
  }
  if (st.size > ZK_AUTH_FILE_BYTES_MAX) throw UkaiError.badArgument(`ZooKeeper credentials file ${abs} is ${st.size} bytes: expected one line user:password`)
  const lines = fs.readFileSync(abs, 'utf8').split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('#'))
  const i = lines.length === 1 ? lines[0].indexOf(':') : -1
  if (i <= 0 || i === lines[0].length - 1) throw UkaiError.badArgument(`ZooKeeper credentials file ${abs}: expected one line user:password`)
  const user = lines[0].slice(0, i)
  if (!USER_RE.test(user)) throw UkaiError.badArgument(`ZooKeeper credentials file ${abs}: user '${user}' must be 1-64 of A-Z a-z 0-9 _ . -`)
  return { user, password: lines[0].slice(i + 1), file: abs }
}

// A new credentials file with a random password, created with mode 0600 (never widened by the
// umask, never replacing an existing file: two clusters must not silently share or lose one).
export function createZkAuthFile (file: string, user = ZK_USER_DEFAULT): ZkAuth {
  if (!USER_RE.test(user)) throw UkaiError.badArgument(`ZooKeeper user '${user}' must be 1-64 of A-Z a-z 0-9 _ . -`)
  const abs = path.resolve(file)
  const password = crypto.randomBytes(ZK_PASSWORD_BYTES).toString('base64url')
  fs.mkdirSync(path.dirname(abs), { recursive: true })
  const fd = fs.openSync(abs, 'wx', 0o600)
  try {
    fs.fchmodSync(fd, 0o600)
    fs.writeSync(fd, `${user}:${password}\n`)
  } finally {
    fs.closeSync(fd)
  }
  return { user, password, file: abs }
}

// The credentials file a process uses: --zk-auth FILE, else $UKAI_ZK_AUTH, else the default path
// when it exists. null: none anywhere (the caller refuses, unless told to run insecure).
export function findZkAuthFile (flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string | null {
  if (flag !== undefined && flag !== '') return flag
  const fromEnv = env[ZK_AUTH_FILE_ENV]
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv
  return fs.existsSync(ZK_AUTH_FILE_DEFAULT) ? ZK_AUTH_FILE_DEFAULT : null
}
