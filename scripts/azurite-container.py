"""Creates a blob container in Azurite (object_store cannot create containers).

    python3 scripts/azurite-container.py http://127.0.0.1:10000/devstoreaccount1 folio-test

Signs the request with Azurite's well-known development account key (SharedKey), as
any Azure client does; an existing container is fine. Used by scripts/test-env.sh.
"""

import base64
import hashlib
import hmac
import sys
import urllib.error
import urllib.request
from email.utils import formatdate

ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
VERSION = "2021-08-06"


def create_container(base_url: str, container: str) -> None:
    date = formatdate(usegmt=True)
    # Path-style URLs name the account in the path, so the canonical resource names it twice.
    resource = f"/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"
    headers = f"x-ms-date:{date}\nx-ms-version:{VERSION}\n"
    to_sign = "PUT\n" + "\n" * 11 + headers + resource
    signature = base64.b64encode(
        hmac.new(base64.b64decode(KEY), to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    request = urllib.request.Request(
        f"{base_url}/{container}?restype=container",
        method="PUT",
        data=None,
        headers={
            "x-ms-date": date,
            "x-ms-version": VERSION,
            "Authorization": f"SharedKey {ACCOUNT}:{signature}",
            "Content-Length": "0",
        },
    )
    try:
        urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as err:
        if err.code != 409:  # 409: the container exists already.
            sys.exit(f"creating Azurite container {container}: HTTP {err.code}: {err.read()[:300]!r}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: azurite-container.py BLOB_URL CONTAINER")
    create_container(sys.argv[1], sys.argv[2])
