"""Device presets from published data; each one names its source.

``presets`` maps a name to a :class:`DeviceModel`:

``ideal``
    A continuous, noiseless device (1 uS .. 100 uS): the reference for ideal limits.
``rram_hfo2``
    HfO2 1T1R RRAM with incremental-gate-voltage program-verify, after V. Milo et al.,
    "Optimized programming algorithms for multilevel RRAM in hardware neural
    networks", IEEE IRPS 2021 (IHP 4 kbit HfO2 arrays).  Window 50 uS .. 225 uS;
    programming std from the linear fit to their Fig. 4 (IGVVA-100 algorithm), as used by
    Sandia CrossSim's ``RRAMMilo`` model: ``sigma_G = 4.782321 uS - 0.009107 * G``.
    That paper gives no read-noise figure: the read noise is the short-term read noise of
    HfOx RRAM measured on the NeuRRAM chip, W. Wan et al., "A compute-in-memory chip
    based on resistive random-access memory", Nature 608, 504 (2022), about 1% of the
    conductance window, as IBM aihwkit applies it beside its ``ReRamWan2022NoiseModel``
    (``w_noise = 0.01``, additive, constant): ``sigma = 0.01 g_max`` per read, whatever
    ``G`` (``read_sigma_rel = 0.01`` at ``g_max`` with ``read_sigma_exponent = 1``),
    white (drawn anew at every read).  No fault or drift figures: zero.  (Stuck-at rates
    are set in a preset only where its own source gives them; none of these does, so
    every preset has 0: set ``p_stuck_low`` and ``p_stuck_high`` from the array you model.)
    Current-voltage curve (used with ``Spec(iv="device")``): Sandia CrossSim 3.2's fit
    (``RRAMMilo.nonlinear_current``) to the I-V curves of four states (62.5 to 110 uS)
    within +-0.5 V in Fig. 1 of the same paper, ``I = G0 V + NL2 V^2 + NL3 V^3`` with
    ``NL2 = 0.007063 + 0.005711 x + 0.001541 x^2 + 0.0001388 x^3`` (A/V^2) and ``NL3 =
    1.2968e-3 + 6.7919e-4 x + 8.871e-5 x^2`` (A/V^3), ``x = log10(G0 / 1 S)``, valid to
    0.5 V.  CrossSim's fit adds a fifth point, a linear device at 225 uS (the curves
    straighten as the conductance grows), to cover the window; between 62.5 and 110 uS
    it rests on the measured curves alone.
``pcm``
    Phase-change memory after the statistical model of S. R. Nandakumar et al.,
    "Phase-change memory models for deep learning training and inference", ICECS 2019
    (IBM aihwkit ``inference/noise/pcm.py``), g_max = 25 uS:
    programming std ``(g_max / 25 uS) * (0.26348 + 1.9650 g~ - 1.1731 g~^2)`` uS;
    drift ``t0 = 20 s``, ``mu_nu = clip(-0.0155 ln g~ + 0.0244, 0.049, 0.1)``,
    ``sigma_nu = clip(-0.0125 ln g~ - 0.0059, 0.008, 0.045)``;
    1/f read noise ``sigma/G = min(0.0088 g~^-0.65, 0.2) * sqrt(ln((t + t_read) / (2 t_read)))``
    with ``t_read = 250 ns`` and ``t = Spec.t_inference + t0`` (factor 4.18 at
    ``t_inference = 0``), drawn once per inference time and static over the reads, as
    aihwkit draws it (``read_noise_static = 1``).  Drift exponents folded to their
    magnitude (``drift_nu_abs``), as aihwkit's ``generate_drift_coefficients`` does: 1.7%
    of low-conductance devices would otherwise drift upward.
``rram_wan2022``
    HfOx RRAM of the NeuRRAM chip, W. Wan et al., "A compute-in-memory chip based on
    resistive random-access memory", Nature 608, 504 (2022), through IBM aihwkit's
    ``ReRamWan2022NoiseModel``, which fits the chip's spread of programmed conductances
    around their targets at 1 s, 1 day and 2 days after programming with a 4th-order
    polynomial in ``g~`` (uS, for g_max = 40 uS; here in units of g_max): 2.8-5.7% of
    g_max at 1 s, 6.6-9.8% after one day.  The relaxation of the spread with time is this
    device's drift: ``Spec.t_inference`` from 0 (the 1 s spread) to 2 days, linear in
    ``ln t`` between the measured times (aihwkit takes those times only), each device
    keeping its draw.  Window 0 .. 40 uS (aihwkit's converter: g_min = 0).  Read noise:
    1% of g_max per read, white, as aihwkit recommends beside this model
    (``forward.w_noise = 0.01``).  No fault figures: zero.
"""

from __future__ import annotations

from types import MappingProxyType

from devices.model import DeviceModel

_US = 1e-6

_PCM_G_MAX = 25 * _US
_PCM_T0 = 20.0
_PCM_T_READ = 250e-9

_RRAM_G_MAX = 225 * _US
_WAN_G_MAX = 40 * _US  # the g_max that aihwkit's fit of the NeuRRAM data is given for

presets = MappingProxyType({
    "ideal": DeviceModel(name="ideal", g_min=1 * _US, g_max=100 * _US,
                         source="ideal reference device"),
    "rram_hfo2": DeviceModel(
        name="rram_hfo2",
        g_min=50 * _US,
        g_max=_RRAM_G_MAX,
        # sigma = 4.782321 uS - 0.009107 G  ==  g_max * (4.782321/225 - 0.009107 g~)
        prog_sigma_poly=(4.782321 / 225.0, -0.009107),
        read_sigma_rel=0.01,
        read_sigma_exponent=1.0,
        iv_nl2_poly=(0.007063, 0.005711, 0.001541, 0.0001388),
        iv_nl3_poly=(1.2968e-3, 6.7919e-4, 8.8710e-5),
        iv_v_max=0.5,
        source="Milo et al., IEEE IRPS 2021, Fig. 4 (via Sandia CrossSim RRAMMilo); read noise: Wan et al., Nature 2022 (via IBM aihwkit)",
    ),
    "pcm": DeviceModel(
        name="pcm",
        g_min=0.0,
        g_max=_PCM_G_MAX,
        prog_sigma_poly=(0.26348 / 25.0, 1.9650 / 25.0, -1.1731 / 25.0),
        read_sigma_rel=0.0088,
        read_sigma_exponent=0.65,
        read_sigma_max=0.2,
        read_noise_t_read=_PCM_T_READ,
        read_noise_static=1.0,
        drift_t0=_PCM_T0,
        drift_nu_mean=0.0244,
        drift_nu_mean_log_slope=-0.0155,
        drift_nu_mean_clip=(0.049, 0.1),
        drift_nu_std=-0.0059,
        drift_nu_std_log_slope=-0.0125,
        drift_nu_std_clip=(0.008, 0.045),
        drift_nu_abs=True,
        source="Nandakumar et al., ICECS 2019 (IBM aihwkit PCMLikeNoiseModel)",
    ),
    "rram_wan2022": DeviceModel(
        name="rram_wan2022",
        g_min=0.0,
        g_max=_WAN_G_MAX,
        relaxation_times=(1.0, 86400.0, 2 * 86400.0),
        relaxation_polys=tuple(tuple(c / 40.0 for c in poly) for poly in (
            (0.348, 16.030, -43.853, 45.393, -16.815),
            (0.701, 22.086, -50.773, 47.095, -16.458),
            (0.782, 20.274, -43.507, 37.062, -11.934),
        )),
        read_sigma_rel=0.01,
        read_sigma_exponent=1.0,
        source="Wan et al., Nature 2022 (NeuRRAM), via IBM aihwkit ReRamWan2022NoiseModel; "
               "read noise: aihwkit's recommended 1% of g_max",
    ),
})
