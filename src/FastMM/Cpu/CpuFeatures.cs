using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastMM.Cpu;

/// <summary>The SIMD instruction set a CPU kernel runs with, widest last.</summary>
public enum SimdLevel
{
    Scalar,
    Vector128,
    Avx2,
    Avx512,
}

/// <summary>Runtime dispatch for the CPU kernels: the widest SIMD level the machine supports, optionally lowered for tests.</summary>
public static class CpuFeatures
{
    /// <summary>The widest level this machine and runtime support.</summary>
    public static SimdLevel Detected { get; } =
        Avx512F.IsSupported && Vector512.IsHardwareAccelerated ? SimdLevel.Avx512
        : Avx2.IsSupported && Fma.IsSupported ? SimdLevel.Avx2
        : Vector128.IsHardwareAccelerated ? SimdLevel.Vector128
        : SimdLevel.Scalar;

    /// <summary>
    /// Forces a lower level (tests use it to cover every path; benchmarks to compare them). Null = <see cref="Detected"/>.
    /// A level above <see cref="Detected"/> is clamped, so forcing never selects unsupported instructions.
    /// </summary>
    internal static SimdLevel? Override { get; set; }

    /// <summary>The level kernels dispatch on now.</summary>
    public static SimdLevel Level => Override is { } o && o < Detected ? o : Detected;
}
