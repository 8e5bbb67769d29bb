// Who a certificate names: one identity and its role, written into every certificate the cluster
// CA issues as a URI subject alternative name `ukai://ROLE/NAME` (and, for people reading it with
// openssl, as CN=NAME, OU=ROLE). The storage node authorizes by role (authz.ts); the node's own
// certificate names its node id, which every client checks (tls.ts), so a client never talks to
// an impostor at a node's address. This file is the one owner of that format.
import { UkaiError } from '../errors'

export const ROLES = ['node', 'agent', 'admin', 'tenant'] as const
export type Role = typeof ROLES[number]

export interface Identity { role: Role, name: string }

const URI_PREFIX = 'ukai://'
// Node ids, host names, admin and tenant names: the characters meta/schema.ts allows in ids.
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/

export function isRole (s: string): s is Role { return (ROLES as readonly string[]).includes(s) }

export function identityUri (id: Identity): string {
  checkIdentity(id)
  return `${URI_PREFIX}${id.role}/${id.name}`
}

export function checkIdentity (id: Identity): void {
  if (!isRole(id.role)) throw UkaiError.badArgument(`unknown role '${String(id.role)}': expected one of ${ROLES.join(', ')}`)
  if (!NAME_RE.test(id.name)) throw UkaiError.badArgument(`bad ${id.role} name '${id.name}': letters, digits, '.', '_', '-', at most 63`)
}

// The identity in a certificate's subjectAltName as Node prints it ('URI:ukai://node/a1, DNS:x').
// Null when it names none or more than one (a certificate is one identity).
export function identityOfSubjectAltName (san: string | undefined): Identity | null {
  if (san === undefined) return null
  const found: Identity[] = []
  for (const part of san.split(',')) {
    const s = part.trim()
    if (!s.startsWith(`URI:${URI_PREFIX}`)) continue
    const [role, name, ...rest] = s.slice(4 + URI_PREFIX.length).split('/')
    if (rest.length > 0 || role === undefined || name === undefined || !isRole(role) || !NAME_RE.test(name)) return null
    found.push({ role, name })
  }
  return found.length === 1 ? found[0] : null
}

// Serial numbers as one spelling: lower-case hex without leading zeros (Node prints upper case,
// openssl may pad).
export function normalizeSerial (serial: string): string {
  const s = serial.trim().toLowerCase().replace(/^0x/, '').replace(/:/g, '').replace(/^0+(?=.)/, '')
  if (!/^[0-9a-f]{1,64}$/.test(s)) throw UkaiError.badArgument(`bad certificate serial '${serial}': expected hex`)
  return s
}
