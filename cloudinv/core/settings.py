"""Settings: one pydantic-settings object from ``cloudinv.toml`` and ``CLOUDINV_*`` variables.

Precedence, highest first: values passed in code (command-line flags), environment variables
(``CLOUDINV_KAFKA__BOOTSTRAP=...``, nested keys joined with ``__``), the TOML file
(``./cloudinv.toml``, or the path in ``--config`` / ``CLOUDINV_CONFIG``), then defaults.

A bad value fails at start with :class:`~cloudinv.core.errors.ConfigError` naming the key, the
value and what was expected.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from cloudinv.core.errors import ConfigError
from cloudinv.core.regions import unknown_region_message

DEFAULT_CONFIG_FILE = Path("cloudinv.toml")
CONFIG_ENV = "CLOUDINV_CONFIG"
EMBEDDED = "embedded"
FETCH_MAX_WAIT_MS = 100
"""The default of ``kafka.fetch_max_wait_ms``: how long a consumer's fetch waits at the broker."""

_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_ACCOUNT_ID_RE = re.compile(r"^\d{12}$")
_OU_ID_RE = re.compile(r"^(r-[0-9a-z]{4,32}|ou-[0-9a-z]{4,32}-[a-z0-9]{8,32})$")


def _split_list(value: str) -> Any:
    """A list from the environment: JSON (``["a","b"]``) or comma-separated (``a,b``)."""
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            return value
    return [item.strip() for item in text.split(",") if item.strip()]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM"]
_MSK_HOST_RE = re.compile(r"\.kafka(?:-serverless)?\.([a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d)\.")


class KafkaSettings(_Section):
    bootstrap: str = Field(
        default=EMBEDDED,
        description="'embedded' (start a local broker) or host:port[,host:port] / kafka://host:port",
    )
    topic_prefix: str = Field(default="cloudinv", pattern=r"^[A-Za-z0-9._-]*$")
    consumer_group: str = Field(
        default="cloudinv",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Consumer group (Faust app id) the stream workers share: every worker "
        "of one deployment uses the same; two deployments on one cluster need two",
    )
    partitions: int = Field(default=4, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=10)
    fetch_max_wait_ms: int = Field(
        default=FETCH_MAX_WAIT_MS,
        ge=10,
        le=30000,
        description="How long a stream worker's fetch may wait at the broker for messages. "
        "Kafka answers as soon as a message arrives, so this only spaces idle polls; the "
        "embedded broker (Tansu) answers when it runs out, so it is also each hop's latency",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = Field(
        default=None,
        description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with sasl_username/password), or "
        "AWS_MSK_IAM (OAUTHBEARER signed with the AWS credential chain; needs SASL_SSL)",
    )
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    msk_region: str | None = Field(
        default=None,
        description="Region of the MSK cluster for AWS_MSK_IAM (else read from the bootstrap "
        "host names, e.g. b-1.x.kafka.eu-west-1.amazonaws.com)",
    )
    ssl_cafile: Path | None = Field(
        default=None, description="PEM CA bundle to verify the brokers (default: system CAs)"
    )
    ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate for mutual TLS"
    )
    ssl_keyfile: Path | None = Field(default=None, description="PEM private key of ssl_certfile")
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = Field(
        default=True, description="Verify that broker certificates name the host connected to"
    )

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        if value == EMBEDDED:
            return value
        for server in value.removeprefix("kafka://").split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    "expected 'embedded' or a comma-separated list of host:port "
                    "(optionally prefixed with kafka://)"
                )
        return value

    @field_validator("msk_region")
    @classmethod
    def _msk_region(cls, value: str | None) -> str | None:
        if value is not None and unknown_region_message([value]):
            raise ValueError("expected an AWS region name like us-east-1")
        return value

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _pem_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    @model_validator(mode="after")
    def _security(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        mechanism = self.sasl_mechanism
        if sasl and mechanism is None:
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism "
                "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM)"
            )
        if mechanism is not None and not sasl:
            raise ValueError(
                f"sasl_mechanism {mechanism} needs security_protocol SASL_SSL "
                f"(or SASL_PLAINTEXT), not {self.security_protocol}"
            )
        if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
            not self.sasl_username or not self.sasl_password
        ):
            raise ValueError(f"sasl_mechanism {mechanism} needs sasl_username and sasl_password")
        if mechanism == "OAUTHBEARER":
            raise ValueError(
                "OAUTHBEARER needs a token source: the one cloudinv provides is AWS MSK IAM "
                "(sasl_mechanism = 'AWS_MSK_IAM')"
            )
        if mechanism == "AWS_MSK_IAM":
            if self.security_protocol != "SASL_SSL":
                raise ValueError("sasl_mechanism AWS_MSK_IAM needs security_protocol SASL_SSL")
            if self.msk_iam_region() is None:
                raise ValueError(
                    "sasl_mechanism AWS_MSK_IAM needs msk_region (the cluster's region), or "
                    "bootstrap host names of the form *.kafka.<region>.amazonaws.com"
                )
        tls_files = [
            name
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
            if getattr(self, name) is not None
        ]
        if tls_files and not tls:
            raise ValueError(
                f"{', '.join(tls_files)} only apply with security_protocol SSL or SASL_SSL, "
                f"not {self.security_protocol}"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile (the client certificate)")
        return self

    @property
    def is_embedded(self) -> bool:
        return self.bootstrap == EMBEDDED

    def group_for(self, role: str) -> str:
        """The consumer group of a role other than the stream workers (the re-describe
        reactor): derived from :attr:`consumer_group`, so two deployments sharing a cluster
        (two groups) never share a role's group either."""
        return f"{self.consumer_group}.{role}"

    def servers(self) -> list[str]:
        """Bootstrap servers as aiokafka wants them (``host:port`` strings)."""
        if self.is_embedded:
            raise ConfigError("kafka.bootstrap is 'embedded': start the runtime to get an address")
        return [s.strip() for s in self.bootstrap.removeprefix("kafka://").split(",")]

    def msk_iam_region(self) -> str | None:
        """The region to sign MSK IAM tokens for: ``msk_region``, else the bootstrap hosts'."""
        if self.msk_region:
            return self.msk_region
        match = _MSK_HOST_RE.search(self.bootstrap)
        return match[1] if match else None


class MetricsSettings(_Section):
    """The health and metrics endpoints of the producers and worker roles (the API serves
    its own on its port)."""

    host: str = Field(
        default="127.0.0.1",
        description="Address the role endpoints listen on (0.0.0.0 in a container)",
    )
    worker_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of `cloudinv worker`'s /metrics, /healthz, /readyz; unset or 0: off",
    )
    producers_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of `cloudinv producers`' /metrics, /healthz, /readyz; unset or 0: off",
    )
    cloudtrail_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of `cloudinv cloudtrail run`'s /metrics, /healthz, /readyz; unset "
        "or 0: off",
    )


class AccountRole(_Section):
    role_arn: str
    external_id: SecretStr | None = None

    @field_validator("role_arn")
    @classmethod
    def _arn(cls, value: str) -> str:
        if not _ROLE_ARN_RE.match(value):
            raise ValueError("expected an IAM role ARN like arn:aws:iam::123456789012:role/Name")
        return value

    @property
    def account_id(self) -> str:
        return self.role_arn.split(":")[4]


class AwsSettings(_Section):
    accounts: list[AccountRole] = Field(
        default_factory=list,
        description="Roles to assume, one per account; empty means the local credential chain",
    )
    organization_role_name: str | None = Field(
        default=None,
        description="Discover accounts with Organizations ListAccounts and assume this role",
    )
    regions: Annotated[list[str] | Literal["all"], NoDecode] = Field(
        default_factory=lambda: ["us-east-1"],
        description="Region names, or 'all' for every region enabled in the account",
    )
    endpoint_url: str | None = Field(
        default=None, description="Override AWS endpoints (moto, LocalStack); else AWS_ENDPOINT_URL"
    )
    max_concurrency: int = Field(
        default=32,
        ge=1,
        le=512,
        description="AWS requests in flight (and scopes collected at once) across a whole scan; "
        "each (account, region, service) has at most 4",
    )
    include_accounts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Scan only these account ids (of the roles and the discovered accounts); "
        "empty: every account, unless include_ous names some",
    )
    exclude_accounts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Never scan these account ids"
    )
    include_ous: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Scan only accounts under these organizational units (ou-... or the root "
        "r-..., nested OUs included); needs organization_role_name",
    )
    exclude_ous: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Never scan accounts under these organizational units (nested included); "
        "needs organization_role_name",
    )

    types: Literal["all", "curated"] = Field(
        default="all",
        description="Resource types scanned: 'all' registered types (curated and derived from "
        "the CloudFormation schemas), or only the 'curated' hand-declared ones",
    )
    include_types: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Types scanned besides those of aws.types (opt-in), e.g. AWS::Glue::Job",
    )
    exclude_types: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Types never scanned (opt-out), e.g. AWS::SageMaker::Model",
    )

    @field_validator("regions", mode="before")
    @classmethod
    def _split_regions(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "all":
            return _split_list(value)
        return value

    @field_validator(
        "include_accounts", "exclude_accounts", "include_ous", "exclude_ous", mode="before"
    )
    @classmethod
    def _split_selection(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _split_list(value)
        if isinstance(value, list):
            # TOML integers (account ids written without quotes) keep their 12 digits.
            return [f"{v:012d}" if isinstance(v, int) else v for v in value]
        return value

    @field_validator("include_accounts", "exclude_accounts")
    @classmethod
    def _account_ids(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if not _ACCOUNT_ID_RE.match(a)]
        if bad:
            raise ValueError(f"expected 12-digit AWS account ids, got {bad}")
        return value

    @field_validator("include_ous", "exclude_ous")
    @classmethod
    def _ou_ids(cls, value: list[str]) -> list[str]:
        bad = [o for o in value if not _OU_ID_RE.match(o)]
        if bad:
            raise ValueError(
                "expected organizational unit ids like ou-ab12-cd34ef56 (or a root like "
                f"r-ab12), got {bad}"
            )
        return value

    @model_validator(mode="after")
    def _selection(self) -> AwsSettings:
        both = sorted(set(self.include_accounts) & set(self.exclude_accounts))
        if both:
            raise ValueError(
                f"account(s) {', '.join(both)} are both in include_accounts and "
                "exclude_accounts: keep each in one list"
            )
        both = sorted(set(self.include_ous) & set(self.exclude_ous))
        if both:
            raise ValueError(
                f"organizational unit(s) {', '.join(both)} are both in include_ous and "
                "exclude_ous: keep each in one list"
            )
        if (self.include_ous or self.exclude_ous) and not self.organization_role_name:
            raise ValueError(
                "include_ous and exclude_ous select accounts found through Organizations: "
                "set organization_role_name too (or list account ids in include_accounts)"
            )
        return self

    @field_validator("include_types", "exclude_types", mode="before")
    @classmethod
    def _split_types(cls, value: Any) -> Any:
        return _split_list(value) if isinstance(value, str) else value

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list):
            if not value:
                raise ValueError("expected at least one region, or 'all'")
            problem = unknown_region_message(value)
            if problem:
                raise ValueError(problem)
        return value

    def effective_endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None


def role_arn_overrides(role_arns: list[str]) -> dict[str, Any]:
    """``[aws]`` overrides that make ``role_arns`` the whole account selection
    (``--role-arn``): Organizations discovery is off for this process, so a producer given
    its share of an organization's accounts scans exactly those (the account id lists still
    filter them)."""
    return {
        "accounts": [{"role_arn": arn} for arn in role_arns],
        "organization_role_name": None,
        "include_ous": [],
        "exclude_ous": [],
    }


StorageTarget = Literal["local", "s3", "dynamodb"]


class StorageSettings(_Section):
    data_dir: Path = Field(default=Path(".cloudinv"), description="Local store, logs, demo.json")
    targets: Annotated[list[StorageTarget], NoDecode] = Field(
        default_factory=lambda: list[StorageTarget](["local"])
    )
    s3_bucket: str | None = None
    s3_prefix: str = "cloudinv"
    s3_region: str | None = Field(
        default=None, description="Region of s3_bucket (default: the AWS SDK's region)"
    )
    warehouse_flush_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Parquet warehouse: changes are buffered this long (or 20,000) per file",
    )
    warehouse_snapshot_interval_s: float = Field(
        default=3600.0,
        ge=1,
        description="Parquet warehouse: today's full snapshot is rewritten this often",
    )
    dynamodb_table_prefix: str = "cloudinv"
    dynamodb_region: str | None = Field(
        default=None, description="Region of the DynamoDB tables (default: AWS_DEFAULT_REGION)"
    )
    dynamodb_endpoint_url: str | None = Field(
        default=None, description="DynamoDB endpoint override (default: aws.endpoint_url)"
    )
    dynamodb_write_concurrency: int = Field(
        default=4, ge=1, le=16, description="DynamoDB write requests in flight per process"
    )

    @field_validator("targets", mode="before")
    @classmethod
    def _split_targets(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _split_list(value)
        return value


class ApiToken(_Section):
    sha256: SecretStr = Field(description="hex SHA-256 of the bearer token")
    accounts: list[str] | None = Field(default=None, description="limit to these account ids")
    name: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: SecretStr) -> SecretStr:
        if not re.fullmatch(r"[0-9a-f]{64}", value.get_secret_value()):
            raise ValueError("expected 64 lowercase hex characters (sha256 of the token)")
        return value


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tokens: list[ApiToken] = Field(default_factory=list)


class WebhookSettings(_Section):
    url: SecretStr = Field(description="where alerts are POSTed (Slack URLs are secrets)")
    format: Literal["generic", "slack"] = Field(
        default="generic",
        description="'generic': the alert notification as JSON; 'slack': incoming-webhook text",
    )

    @field_validator("url")
    @classmethod
    def _http(cls, value: SecretStr) -> SecretStr:
        if not re.match(r"^https?://[^\s/]+", value.get_secret_value()):
            raise ValueError("expected an http:// or https:// URL")
        return value


class AlertSettings(_Section):
    rules_dir: Path | None = Field(
        default=None, description="Directory of *.yaml rule files, added to the built-in pack"
    )
    builtin_rules: bool = Field(default=True, description="Load the built-in rule pack")
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    sns_topic_arn: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:.+$"
    )
    retry_first_delay_s: float = Field(
        default=2.0, gt=0, description="First retry delay of a failed delivery"
    )
    retry_max_delay_s: float = Field(
        default=60.0, gt=0, description="Retry delays double up to this (destinations down a while)"
    )
    delivery_timeout_s: float = Field(default=10.0, gt=0)


class CloudTrailSettings(_Section):
    queue_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="SQS queues receiving the trail bucket's S3 notifications (or EventBridge "
        "CloudTrail events); empty: no live CloudTrail",
    )
    region: str | None = Field(default=None, description="Region of the queues (else from URL)")
    react: bool = Field(
        default=True,
        description="Re-describe resources named by write events at once, with attribution",
    )
    verify_digests: bool = Field(
        default=False,
        description="Check each CloudTrail digest file that lands: its log files' SHA-256, "
        "the digest chain and (when CloudTrail's public key can be had) its signature; "
        "problems are listed by `cloudinv cloudtrail rejected`",
    )

    @field_validator("queue_urls", mode="before")
    @classmethod
    def _split_queues(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _split_list(value)
        return value

    @field_validator("queue_urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        bad = [u for u in value if not re.match(r"^https?://\S+/\d{12}/[\w.-]+$", u)]
        if bad:
            raise ValueError(
                "expected SQS queue URLs like "
                f"https://sqs.us-east-1.amazonaws.com/123456789012/name, got {bad}"
            )
        return value


class Settings(BaseSettings):
    """The effective configuration of one cloudinv process."""

    model_config = SettingsConfigDict(
        env_prefix="CLOUDINV_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    aws: AwsSettings = Field(default_factory=AwsSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    cloudtrail: CloudTrailSettings = Field(default_factory=CloudTrailSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    scan_interval_s: Annotated[int, Field(ge=5)] = 900
    scan_type_intervals_s: dict[str, Annotated[int, Field(ge=5)]] = Field(
        default_factory=dict,
        description="Per-type scan interval overrides, e.g. {'AWS::EC2::Instance': 300}",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @property
    def data_dir(self) -> Path:
        return self.storage.data_dir

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets replaced by '********'."""
        masked: dict[str, Any] = _mask(self.model_dump(mode="python"))
        return masked


_TOML_FILE: ContextVar[Path | None] = ContextVar("cloudinv_toml_file", default=None)


_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def _mask(value: Any, key: str = "") -> Any:
    """Secrets (SecretStr, values under a key named like a secret) become '********', and
    credentials written into a URL (``scheme://user:password@host``) are taken out."""
    if isinstance(value, SecretStr):
        return "********" if value.get_secret_value() else ""
    if isinstance(value, dict):
        return {k: _mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and value:
        if _looks_secret(key.lower()):
            return "********"
        return _URL_USERINFO.sub(r"\g<scheme>********@", value)
    return value


def resolve_config_path(path: Path | str | None) -> Path | None:
    """The TOML file to read: the explicit path, $CLOUDINV_CONFIG, or ./cloudinv.toml if present.

    An explicitly named file that does not exist is an error; the default is optional.
    """
    explicit = path or os.environ.get(CONFIG_ENV)
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist (from --config or ${CONFIG_ENV})")
        return p
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(
    config: Path | str | None = None,
    *,
    flags: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read and validate settings. Raises ConfigError with key, value and expectation.

    ``flags``: which command-line options gave which of the ``overrides`` (see
    :func:`describe_validation_error`)."""
    toml_file = resolve_config_path(config)
    if toml_file is not None:
        # Imported here for start-up speed: most commands have no config file to parse.
        import tomllib

        try:
            tomllib.loads(toml_file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {toml_file} is not valid TOML: {exc}") from None
    token = _TOML_FILE.set(toml_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, toml_file, flags)) from None
    except SettingsError as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"invalid config: {exc}{cause}") from None
    finally:
        _TOML_FILE.reset(token)


def describe_validation_error(
    exc: ValidationError,
    toml_file: Path | None = None,
    flags: Mapping[str, str] | None = None,
) -> str:
    """One line per bad value: key, value, what was expected, and where it was set.

    ``flags`` maps setting keys (``aws.accounts``) to the command-line option that set them
    (``--role-arn``): a bad value from a flag names the flag, not the file or environment.
    """
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        # A list's items are set as the whole list (CLOUDINV_AWS__ACCOUNTS='[...]').
        named = list(itertools.takewhile(lambda p: isinstance(p, str), err["loc"]))
        env = "CLOUDINV_" + "__".join(str(p) for p in named).upper()
        flag = next(
            (f for k, f in (flags or {}).items() if key == k or key.startswith(k + ".")), None
        )
        where = f"from {flag}" if flag else f"set in {_where(toml_file)} or {env}"
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            what = "unknown setting"
        else:
            what = err["msg"].removeprefix("Value error, ")
        if isinstance(value, dict):
            # A rule across a section's keys: its input is the whole section, secrets and
            # all, so name the section instead of printing it.
            suffix = f"from {flag}" if flag else f"set in {_where(toml_file)} or {env}__*"
            lines.append(f"invalid config {key}: {what} ({suffix})")
            continue
        shown = "********" if _looks_secret(key) else repr(value)
        lines.append(f"invalid config {key} = {shown}: {what} ({where})")
    return "\n".join(lines)


def _looks_secret(key: str) -> bool:
    return any(word in key for word in ("password", "secret", "sha256", "token", "external_id"))


def _where(toml_file: Path | None) -> str:
    return str(toml_file) if toml_file else "cloudinv.toml"
