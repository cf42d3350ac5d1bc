"""What a platform runs with: `Settings` (the task rules' knobs) and `ServiceOptions` (the
service's addresses, broker and TLS), and their JSON form for a service in a child process."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .store_sql import is_postgres

DEFAULT_SHARE_GROUP = "fota"


@dataclass
class Settings:
    file_base: str = "http://127.0.0.1:8080/file/upgrade"
    topic_prefix: str = "devices/{device}"
    push_rate: float = 600.0  # notices per minute
    retries: int = 0
    retry_backoff: float = 30.0  # seconds, doubled after each retry
    device_timeout: float = 600.0  # seconds without a report from an upgrading device
    token_ttl: float = 3600.0  # seconds a download token stays valid after a notice
    online_window: float = 120.0  # seconds a message keeps a device "online" (link up too)
    flush_interval: float = 0.2  # seconds between commits of progress updates
    require_signed: bool = False  # refuse packages without a Secure Boot V2 signature
    # The store: None = DATA/platform.db (SQLite, one instance); a PostgreSQL URL
    # (postgresql://USER:PASS@HOST[:PORT]/DB) is shared by any number of instances.
    db: str | None = None
    # MQTT shared-subscription group ($share/<group>/...): each device message reaches one
    # instance of the group. None: "fota" for a service with a PostgreSQL store and an
    # external broker (ServiceOptions), else plain subscriptions; "" forces plain ones.
    share_group: str | None = None
    # Package images: None = DATA/packages; instances sharing a database share this folder.
    packages_dir: str | None = None


@dataclass
class ServiceOptions:
    data_dir: Path
    broker: str | None = None  # None: embedded amqtt broker
    host: str = "127.0.0.1"
    http_port: int = 8080
    mqtt_port: int = 1883
    public_url: str | None = None  # base devices use for downloads, default http(s)://host:port
    ca: str | None = None
    insecure: bool = False
    client_id: str = "fota-platform"
    tls_cert: str | None = None
    tls_key: str | None = None
    tick: float = 0.1
    # The embedded broker's logins: a `mosquitto-config --out` folder (passwd,
    # credentials.json). None: anonymous on loopback; beyond loopback DATA/broker is made.
    broker_auth: str | None = None
    allow_anonymous: bool = False  # an anonymous embedded broker beyond loopback (warned)
    idle_timeout: float = 15.0  # seconds an HTTP connection may wait for a request
    connect_timeout: float = 10.0  # seconds an MQTT connection may wait for its CONNECT
    max_per_address: int = 256  # open HTTP connections per client address (a NAT: more)
    settings: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        # instances sharing a PostgreSQL store share the device messages of the broker
        if self.settings.share_group is None and is_postgres(self.settings.db) and self.broker:
            self.settings.share_group = DEFAULT_SHARE_GROUP

    @classmethod
    def build(cls, data_dir: str | Path, **options: Any) -> ServiceOptions:
        """Options from keywords: any field of ServiceOptions or of Settings (push_rate=600,
        ...); paths become strings. An unknown keyword is a TypeError."""
        mine = {f.name for f in fields(cls)} - {"data_dir", "settings"}
        knobs = {f.name for f in fields(Settings)}
        unknown = set(options) - mine - knobs
        if unknown:
            raise TypeError(f"unknown platform options: {', '.join(sorted(unknown))}")
        own = {k: str(v) if isinstance(v, Path) else v for k, v in options.items() if k in mine}
        settings = Settings(**{k: v for k, v in options.items() if k in knobs})
        return cls(data_dir=Path(data_dir), settings=settings, **own)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "data_dir": str(self.data_dir)})

    @classmethod
    def from_json(cls, text: str) -> ServiceOptions:
        raw = json.loads(text)
        return cls(**{**raw, "data_dir": Path(raw["data_dir"]),
                      "settings": Settings(**raw["settings"])})
