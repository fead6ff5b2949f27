"""Continuous CPU profiling for our Python services: an in-process Sampler, pprof's format
(encode.cpu_profile, also used by `homelab profile`) and the /debug/pprof/profile endpoint that
Grafana Alloy's pyroscope.scrape reads. A distribution of its own under src/ so that toy-redis and
the alert relay (separate distributions) share one copy; roles/python_app ships it as a local wheel."""

from pprof_sampler.endpoint import PATH, ProfileEndpoint
from pprof_sampler.sampler import MAX_HZ, WINDOW_S, Sampler, SigprofTaken

__all__ = ["MAX_HZ", "PATH", "ProfileEndpoint", "Sampler", "SigprofTaken", "WINDOW_S"]
