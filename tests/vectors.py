"""The wire spec's test vectors (enigma-wire-v0.0.2 section 7), written down once.

Test modules import them under the names they use (``from tests.vectors import PEPPER_HEX``);
every value here is the spec's, byte for byte.
"""

from __future__ import annotations

# -- 7.1 UserId: (input, its UTF-8 hex, UserId hex) -----------------------------------------

ALICE_HANDLE_HEX = "4e586a7d57683f7ae69c6dbe407c986df78603ca12e9cab26d245df1349f08b5"
BOB_HANDLE_HEX = "43e1e13aec2cf4862b8350249559295b6230353c9c42a97c21c7b2d98af6b7e5"

USER_ID_VECTORS = [
    ("alice", "616c696365", ALICE_HANDLE_HEX),
    ("  Bob ", "2020426f6220", BOB_HANDLE_HEX),
    ("Bob", "426f62", BOB_HANDLE_HEX),
    ("bob", "626f62", "c3ca3a2ab8057e23941c0a784969367dbdc56c4a86ddd406d0644e8353950303"),
    ("Jos\u00e9", "4a6f73c3a9", "54f285a57358513fa77820c74673674dd505121175bd662ce6c648801838e027"),
    (
        "Jose\u0301",
        "4a6f7365cc81",
        "315ce3bea3b97842a0575805d6312b2f4b7b673bb5eb6d9a4bdc52617b9e9ec2",
    ),
    ("Зоё", "d097d0bed191", "0cf84103a9567d8962c2a9aa9ee4de6112510a224670cc010a591b9f32fad113"),
]

# -- 7.2 envelope: keys, DH, AEAD key, nonce, plaintext, ciphertext, register body ------------

PEPPER_HEX = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20"
PEPPER = bytes.fromhex(PEPPER_HEX)  # bytes(range(0x01, 0x21))
SERVER_PRIVATE_HEX = "101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
SERVER_PRIVATE = bytes.fromhex(SERVER_PRIVATE_HEX)  # bytes(range(0x10, 0x30))
SERVER_PUBLIC_HEX = "d89e3bad79437dbed9f843418304f460ff05c7fe81fe4a9577a804cb9367ff66"
KID_HEX = "0001020304050607"
KID = bytes.fromhex(KID_HEX)
CLIENT_PRIVATE = bytes([0x09] * 32)
CLIENT_PUBLIC_HEX = "57db4b359f23ae5e146e4e2512056704722506348c150c14753d0c933d04d421"
SHARED_SECRET_HEX = "8e3598d52fb897464f3900f687f8684dcce39b279df2794a6d1380bc8bfe8b4e"
AEAD_KEY_HEX = "0b7e1c05e8664b08a2dffe8370539c555298abe7a74ac901fafcdd8f09a52024"
NONCE_HEX = "000102030405060708090a0b0c0d0e0f1011121314151617"
NONCE = bytes.fromhex(NONCE_HEX)  # bytes(range(0x18))

# The exact 201-byte plaintext sealed in the register envelope.
PLAINTEXT = (
    b'{"user_id":"4e586a7d57683f7ae69c6dbe407c986df78603ca12e9cab26d245df1349f08b5",'
    b'"username_hint":"alice","signing_public_key":[1,2,3],"encryption_public_key":[4,5,6],'
    b'"signature":[7,8,9],"created_at_ms":1}'
)
CIPHERTEXT_B64 = (
    "yBvCsN34bTymEqey2k+Mi2ff6vWhsMhVF5jFDXmkIsUnHdzcGzN4v7leGx7jN+2EPE9xr3cO7hGqAA+latjq30PEa2Yf"
    "jVnFcuOz2/afkHnOmtC/mc96zx6DzgXzWPoVZH8+6snPIskVvDTW8EFm/qytUtUp2e+vbAp0LRIizk5sqrQweebNV4OD"
    "2il+WAHSS6jn3o1mTlXqIFbTLkWj4/smGrmP35dX8ObmfxU+N8oaHkGXJW5ZWIJRemX5vjB5WMPcVkxZz5VDvNm9m+i/"
    "+XUPw0rDT1zDyA=="
)
REGISTER_BODY = (
    '{"handle":"'
    + ALICE_HANDLE_HEX
    + '","envelope":{"kid":"'
    + KID_HEX
    + '","sender_pubkey":"'
    + CLIENT_PUBLIC_HEX
    + '","nonce":"'
    + NONCE_HEX
    + '","ciphertext":"'
    + CIPHERTEXT_B64
    + '"}}'
).encode()
