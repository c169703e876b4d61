# The board's side of the differential test (test_linkauth.py): reads cases from a file, one a
# line (key, host nonce, board nonce, boot id, direction, counter, frame; hex and decimal), and
# prints for each what capshared.linkauth makes of it, for the host's implementation to match.
from capshared.linkauth import CURRENT, HELLO, TAG_SIZE, LinkAuth

try:
    import cryptolib  # noqa: F401

    AES = None
except ImportError:
    from capwarden.link.linkauth import ecb as AES


def _unhex(s):
    return bytes(int(s[i:i + 2], 16) for i in range(0, len(s), 2))


def _hex(b):
    return "".join("%02x" % x for x in b)


def compute(path):
    out = []
    with open(path) as f:
        for line in f:
            key, nh, nb, boot_id, d, ctr, frame = line.split()
            key, nh, nb, frame = _unhex(key), _unhex(nh), _unhex(nb), _unhex(frame.strip("-"))
            boot_id, d, ctr = int(boot_id), int(d), int(ctr)
            la = LinkAuth(d, AES)
            la.set_key(key)
            plain = bytearray(16)
            la.mac(-1, -1, 0, frame, 0, len(frame), plain, 0, 16)
            la.begin(nh, 0, nb, 0, boot_id, CURRENT)
            la.tx[CURRENT] = ctr - 1
            tag = bytearray(TAG_SIZE)
            assert la.seal(frame, 0, len(frame), tag, 0) == ctr
            hello = bytearray(TAG_SIZE)
            la.tx_dir = 1
            la.seal(frame, 0, len(frame), hello, 0, HELLO)
            for i in range(8):
                la.boot_nonce[i] = nb[i]
            la.nonces = ctr
            nonce = bytearray(8)
            la.board_nonce(nonce, 0)
            out.append(" ".join((_hex(plain), _hex(tag), _hex(hello), _hex(la.key_id), _hex(nonce))))
    return out


def main(path):
    for line in compute(path):
        print("LA " + line)
