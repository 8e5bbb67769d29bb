# One file-system call (or a short sequence) on a path, answered as one JSON line, so a test can
# check errno values Node's fs does not reach (xattrs, OFD locks) and run them as another user.
#   fs-probe.py get PATH NAME | set PATH NAME HEXVALUE FLAGS | list PATH | remove PATH NAME
#   fs-probe.py stat PATH | read PATH OFFSET LENGTH | write PATH OFFSET HEXDATA
#   fs-probe.py ofd PATH_A PATH_B   -- write-lock all of A, try B, unlock A, try B again
import errno
import fcntl
import json
import os
import struct
import sys


def flock (kind):
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (must be 0 for OFD locks), padding
    return struct.pack('hhqqi4x', kind, os.SEEK_SET, 0, 0, 0)


def try_lock (fd):
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock(fcntl.F_WRLCK))
        return 'locked'
    except OSError as e:
        return errno.errorcode[e.errno]


def main (op, args):
    if op == 'get':
        return {'value': os.getxattr(args[0], args[1]).hex()}
    if op == 'set':
        os.setxattr(args[0], args[1], bytes.fromhex(args[2]), int(args[3]))
        return {}
    if op == 'list':
        return {'names': sorted(os.listxattr(args[0]))}
    if op == 'remove':
        os.removexattr(args[0], args[1])
        return {}
    if op == 'stat':
        st = os.stat(args[0])
        return {'uid': st.st_uid, 'gid': st.st_gid, 'mode': st.st_mode & 0o7777, 'size': st.st_size}
    if op == 'read':
        fd = os.open(args[0], os.O_RDONLY)
        try:
            return {'data': os.pread(fd, int(args[2]), int(args[1])).hex()}
        finally:
            os.close(fd)
    if op == 'write':
        fd = os.open(args[0], os.O_WRONLY)
        try:
            return {'written': os.pwrite(fd, bytes.fromhex(args[2]), int(args[1]))}
        finally:
            os.close(fd)
    if op == 'ofd':
        a = os.open(args[0], os.O_RDWR)
        b = os.open(args[1], os.O_RDWR)
        try:
            first = try_lock(a)
            while_held = try_lock(b)
            fcntl.fcntl(a, fcntl.F_OFD_SETLK, flock(fcntl.F_UNLCK))
            after_unlock = try_lock(b) if while_held != 'locked' else 'locked'
            return {'first': first, 'whileHeld': while_held, 'afterUnlock': after_unlock}
        finally:
            os.close(a)
            os.close(b)
    raise SystemExit('unknown op ' + op)


try:
    out = main(sys.argv[1], sys.argv[2:])
    out['ok'] = True
except OSError as e:
    # EOPNOTSUPP and ENOTSUP are one value on Linux; python names it ENOTSUP.
    name = 'EOPNOTSUPP' if e.errno == errno.EOPNOTSUPP else errno.errorcode.get(e.errno, str(e.errno))
    out = {'ok': False, 'errno': name}
print(json.dumps(out))
