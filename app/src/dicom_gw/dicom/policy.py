"""Who may associate: the called AE title, a default-deny calling AE allow-list, disk headroom.

The rejection reasons are the A-ASSOCIATE-RJ (result, source, diagnostic) triples of PS3.8 9.3.4,
so a modality's log says why it was refused: permanent for a wrong or unknown AE title (retrying
will not help), transient for disk pressure (retrying later will).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from dicom_gw.config import DicomSettings


@dataclass(frozen=True)
class Rejection:
    result: int
    source: int
    diagnostic: int
    reason: str


CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)
CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
TEMPORARY_CONGESTION = (0x02, 0x03, 0x01)


class AssociationPolicy:
    def __init__(
        self,
        settings: DicomSettings,
        disk_usage_percent: Callable[[], float],
        watermark_percent: float,
    ) -> None:
        self._settings = settings
        self._disk_usage_percent = disk_usage_percent
        self._watermark = watermark_percent
        self._allowed = [
            (
                caller.ae_title,
                [ipaddress.ip_network(net, strict=False) for net in caller.networks],
            )
            for caller in settings.allowed_callers
        ]

    def caller_allowed(self, calling_ae: str, peer_address: str) -> bool:
        if self._settings.allow_any_caller:
            return True
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
        try:
            address = ipaddress.ip_address(peer_address)
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped  # an IPv4 sender seen through a dual-stack socket
        for ae_title, networks in self._allowed:
            if ae_title != calling_ae:
                continue
            if not networks:
                return True
            if address is not None and any(address in net for net in networks):
                return True
        return False

    def check(self, called_ae: str, calling_ae: str, peer_address: str) -> Rejection | None:
        called = called_ae.strip()
        calling = calling_ae.strip()
        if self._settings.require_called_ae_title and called != self._settings.ae_title:
            return Rejection(*CALLED_AE_NOT_RECOGNISED, "called AE title not recognised")
        if not self.caller_allowed(calling, peer_address):
            return Rejection(*CALLING_AE_NOT_RECOGNISED, "calling AE title not allowed")
        usage = self._disk_usage_percent()
        if usage >= self._watermark:
            return Rejection(
                *TEMPORARY_CONGESTION,
                f"storage at {usage:.1f}% is above the {self._watermark:.1f}% watermark",
            )
        return None
