# A stand-in for systemd's notification socket (test/daemons-systemd.test.ts): binds an AF_UNIX
# datagram socket at argv[1] and prints every message on one line (fields joined by '|').
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print('listening', flush=True)
while True:
    msg = s.recv(4096).decode('utf-8', 'replace')
    print(msg.replace('\n', '|'), flush=True)
