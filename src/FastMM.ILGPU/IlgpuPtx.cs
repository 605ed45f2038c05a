using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace FastMM.Ilgpu;

/// <summary>
/// PTX of every ILGPU kernel, generated without a GPU (ILGPU's PTX backend for sm_80, PTX ISA 7.8, which CUDA 11.8's
/// ptxas assembles for sm_80 and sm_90), so CI can assemble them like kernels/*.cu.
/// </summary>
public static class IlgpuPtx
{
    /// <summary>The kernels: explicitly grouped ones take a KernelConfig at launch; the others an IndexND.</summary>
    public static IReadOnlyList<MethodInfo> Kernels { get; } = typeof(IlgpuKernels)
        .GetMethods(BindingFlags.Public | BindingFlags.Static)
        .Where(m => m.ReturnType == typeof(void))
        .OrderBy(m => m.Name)
        .ToArray();

    private static bool ImplicitlyGrouped(MethodInfo m)
    {
        var first = m.GetParameters().FirstOrDefault()?.ParameterType;
        return first == typeof(Index1D) || first == typeof(Index2D) || first == typeof(Index3D);
    }

    /// <summary>(kernel name, PTX text) for every kernel.</summary>
    public static IEnumerable<(string Name, string Ptx)> Generate()
    {
        using var context = Context.Create(b => b.Optimize(OptimizationLevel.O1).EnableAlgorithms());
        using var backend = new PTXBackend(context, CudaArchitecture.SM_80, CudaInstructionSet.ISA_78, null!);
        foreach (var m in Kernels)
        {
            var entry = ImplicitlyGrouped(m)
                ? EntryPointDescription.FromImplicitlyGroupedKernel(m)
                : EntryPointDescription.FromExplicitlyGroupedKernel(m);
            var compiled = (PTXCompiledKernel)backend.Compile(entry, KernelSpecialization.Empty);
            yield return (m.Name, compiled.PTXAssembly);
        }
    }
}
