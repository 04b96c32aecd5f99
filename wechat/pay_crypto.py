"""WeChat Pay APIv3's cryptography, shared by the client (wechat/pay.py) and the sandbox's
emulator (sandbox/pay_emulator.py): the keys, request and answer signatures (SHA256withRSA, PKCS#1 v1.5),
RSA-OAEP (SHA-1) for sensitive fields and AEAD_AES_256_GCM for callback resources.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SCHEMA = "WECHATPAY2-SHA256-RSA2048"
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"  # WeChat Pay's probes: a product that accepts them verifies nothing
MAX_SKEW_SECONDS = 300
ALPHANUMERIC = string.ascii_letters + string.digits
_AUTH_FIELD = re.compile(r'(\w+)="([^"]*)"')


class PayError(Exception):
    """Anything WeChat Pay's transport raises."""


class SignatureInvalid(PayError):
    """A signature, serial or timestamp that does not verify (probes included)."""


# ---- keys ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PayKeys:
    """The merchant's side: what the product holds."""

    mchid: str
    merchant_serial: str
    private_key: rsa.RSAPrivateKey  # the merchant's: signs requests
    apiv3_key: bytes  # 32 bytes: decrypts callbacks (AEAD_AES_256_GCM)
    public_key_id: str  # "PUB_KEY_ID_..."
    public_key: rsa.RSAPublicKey  # WeChat Pay's: verifies answers and callbacks, encrypts user_name

    @classmethod
    def load(cls, *, mchid: str, merchant_serial: str, private_key_path: Path | str, apiv3_key: str | bytes,
             public_key_id: str, public_key_path: Path | str) -> PayKeys:
        private_key = serialization.load_pem_private_key(Path(private_key_path).read_bytes(), password=None)
        public_key = serialization.load_pem_public_key(Path(public_key_path).read_bytes())
        if not isinstance(private_key, rsa.RSAPrivateKey) or not isinstance(public_key, rsa.RSAPublicKey):
            raise TypeError("WeChat Pay keys must be RSA keys")
        return cls(mchid=mchid, merchant_serial=merchant_serial, private_key=private_key,
                   apiv3_key=apiv3_key_bytes(apiv3_key), public_key_id=public_key_id, public_key=public_key)


@dataclass(frozen=True)
class EmulatorKeys:
    """WeChat Pay's side, the mirror image of PayKeys: what the sandbox's emulator holds."""

    mchid: str
    merchant_serial: str
    merchant_public_key: rsa.RSAPublicKey  # verifies the merchant's requests
    apiv3_key: bytes  # encrypts callbacks
    public_key_id: str
    private_key: rsa.RSAPrivateKey  # WeChat Pay's: signs answers and callbacks, decrypts user_name


def apiv3_key_bytes(key: str | bytes) -> bytes:
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) != 32:
        raise ValueError("the APIv3 key is 32 bytes")
    return raw


def sandbox_keys(directory: Path, mchid: str = "1900000001") -> tuple[PayKeys, EmulatorKeys]:
    """Generate once (persisted as PEM files in `directory`, reused after) the merchant key pair and
    WeChat Pay's key pair; the product gets PayKeys, the emulator the mirror image.

    Safe when several processes start at once: each file appears whole or not at all, and every
    process reads back the file that won."""
    directory.mkdir(parents=True, exist_ok=True)
    merchant = _load_private(_persisted(directory / "merchant_key.pem", _new_private_pem))
    wechatpay = _load_private(_persisted(directory / "wechatpay_key.pem", _new_private_pem))
    apiv3 = _persisted(directory / "apiv3_key", lambda: "".join(
        secrets.choice(ALPHANUMERIC) for _ in range(32)).encode())
    # Serials follow from the keys, so nothing else needs storing.
    merchant_serial = hashlib.sha1(_der(merchant.public_key())).hexdigest().upper()
    public_key_id = "PUB_KEY_ID_" + hashlib.sha256(_der(wechatpay.public_key())).hexdigest().upper()[:24]
    return (PayKeys(mchid=mchid, merchant_serial=merchant_serial, private_key=merchant, apiv3_key=apiv3,
                    public_key_id=public_key_id, public_key=wechatpay.public_key()),
            EmulatorKeys(mchid=mchid, merchant_serial=merchant_serial, merchant_public_key=merchant.public_key(),
                         apiv3_key=apiv3, public_key_id=public_key_id, private_key=wechatpay))


def _new_private_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_private(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _der(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _persisted(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's content, written first (mode 0600) when missing; os.link never overwrites."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(make())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process was first: use its file
        finally:
            tmp.unlink()
    return path.read_bytes()


# ---- signatures ---------------------------------------------------------------------------------
def new_nonce() -> str:
    return "".join(secrets.choice(ALPHANUMERIC) for _ in range(32))


def request_message(method: str, path_qs: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n, BODY exactly the bytes sent (empty for GET)."""
    return f"{method}\n{path_qs}\n{timestamp}\n{nonce}\n".encode() + body + b"\n"


def answer_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def sign(private_key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def signature_valid(public_key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    if signature.startswith(PROBE_PREFIX):
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, InvalidSignature):
        return False
    return True


def authorization(keys: PayKeys, method: str, path_qs: str, body: bytes, *, timestamp: int,
                  nonce: str | None = None) -> str:
    """The Authorization header of a merchant's request."""
    nonce = nonce or new_nonce()
    signature = sign(keys.private_key, request_message(method, path_qs, str(timestamp), nonce, body))
    return (f'{SCHEMA} mchid="{keys.mchid}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{keys.merchant_serial}"')


def parse_authorization(header: str) -> dict[str, str]:
    """The fields of an Authorization header; {} when it is not WeChat Pay's schema."""
    schema, _, rest = header.partition(" ")
    return dict(_AUTH_FIELD.findall(rest)) if schema == SCHEMA else {}


def verify_signed(public_key: rsa.RSAPublicKey, public_key_id: str, headers: Mapping[str, str], body: bytes,
                  *, now: float) -> None:
    """Check an answer's or a callback's Wechatpay-* headers: the serial names our key, the timestamp
    is within ±300 s, the signature verifies (probes never do). Raises SignatureInvalid."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get("wechatpay-timestamp", "")
    nonce = lower.get("wechatpay-nonce", "")
    signature = lower.get("wechatpay-signature", "")
    if signature.startswith(PROBE_PREFIX):
        raise SignatureInvalid("a WeChat Pay probe")
    if lower.get("wechatpay-serial") != public_key_id:
        raise SignatureInvalid("Wechatpay-Serial does not name our WeChat Pay public key")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        raise SignatureInvalid("Wechatpay-Timestamp missing or more than 300 s off")
    if not nonce or not signature_valid(public_key, answer_message(timestamp, nonce, body), signature):
        raise SignatureInvalid("Wechatpay-Signature does not verify")


def signed_headers(private_key: rsa.RSAPrivateKey, public_key_id: str, body: bytes, *, timestamp: int,
                   signature: str | None = None) -> dict[str, str]:
    """Wechatpay-* headers of an answer or a callback (`signature` given: a probe's)."""
    nonce = new_nonce()
    return {"Wechatpay-Timestamp": str(timestamp), "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature or sign(private_key, answer_message(str(timestamp), nonce, body)),
            "Wechatpay-Serial": public_key_id, "Wechatpay-Signature-Type": SCHEMA}


# ---- encryption ---------------------------------------------------------------------------------
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def encrypt_field(public_key: rsa.RSAPublicKey, text: str) -> str:
    """A sensitive field (user_name): RSA-OAEP with SHA-1, base64."""
    return base64.b64encode(public_key.encrypt(text.encode(), _OAEP)).decode()


def decrypt_field(private_key: rsa.RSAPrivateKey, ciphertext: str) -> str:
    """Raises ValueError when it does not decrypt."""
    return private_key.decrypt(base64.b64decode(ciphertext, validate=True), _OAEP).decode()


def encrypt_resource(apiv3_key: bytes, plaintext: bytes, associated_data: str) -> dict[str, str]:
    """A callback's `resource`: AEAD_AES_256_GCM, the tag appended to the base64 ciphertext."""
    nonce = "".join(secrets.choice(ALPHANUMERIC) for _ in range(12))
    ciphertext = AESGCM(apiv3_key).encrypt(nonce.encode(), plaintext, associated_data.encode())
    return {"original_type": "mch_payment", "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": base64.b64encode(ciphertext).decode(), "associated_data": associated_data,
            "nonce": nonce}


def decrypt_resource(apiv3_key: bytes, resource: Mapping[str, str]) -> bytes:
    """Raises SignatureInvalid when the resource is not ours or was altered."""
    if resource.get("algorithm") != "AEAD_AES_256_GCM":
        raise SignatureInvalid("unknown resource algorithm")
    try:
        return AESGCM(apiv3_key).decrypt(str(resource["nonce"]).encode(),
                                         base64.b64decode(str(resource["ciphertext"]), validate=True),
                                         str(resource.get("associated_data") or "").encode())
    except (KeyError, ValueError, InvalidTag):
        raise SignatureInvalid("the resource does not decrypt with our APIv3 key") from None
