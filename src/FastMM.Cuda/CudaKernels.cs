using System.Reflection;
using FastMM.Cuda.Driver;

namespace FastMM.Cuda;

/// <summary>
/// The extern "C" entry points of kernels/*.cu, by file. A test holds this table and the sources to each other,
/// so a kernel renamed on one side fails the build's tests instead of a launch on some GPU machine.
/// </summary>
public static class CudaKernelNames
{
    public const string AttentionPrefillHd64 = "attention_prefill_hd64";
    public const string AttentionPrefillHd128 = "attention_prefill_hd128";
    public const string AttentionKvToF16 = "attention_kv_to_f16";
    public const string AttentionKvToF16Int8 = "attention_kv_to_f16_int8";
    public const string AttentionDecodePagedF32 = "attention_decode_paged_f32";
    public const string AttentionDecodePagedInt8 = "attention_decode_paged_int8";

    public const string Activation = "activation_f32";
    public const string AddBroadcast = "add_broadcast_f32";
    public const string ScaleBias = "scale_bias_f32";
    public const string SwiGlu = "swiglu_f32";
    public const string SoftmaxRows = "softmax_rows_f32";
    public const string L2NormalizeRows = "l2_normalize_rows_f32";
    public const string GatherRows = "gather_rows_f32";
    public const string ScatterRows = "scatter_rows_f32";

    public const string KvAppendF32 = "kv_append_f32";
    public const string KvAppendInt8 = "kv_append_int8";
    public const string KvCopyBlocks = "kv_copy_blocks";

    public const string RmsNorm = "rms_norm_f32";
    public const string LayerNorm = "layer_norm_f32";

    public const string PatchEmbedF32 = "patch_embed_f32w";
    public const string PatchEmbedF16 = "patch_embed_f16w";

    public const string LinearF32Gemm = "linear_f32w_gemm";
    public const string LinearF16Gemm = "linear_f16w_gemm";
    public const string LinearQ8_0Gemm = "linear_q8_0_gemm";
    public const string LinearQ4_0Gemm = "linear_q4_0_gemm";
    public const string LinearInt4GroupGemm = "linear_int4g_gemm";
    public const string LinearF32Gemv = "linear_f32w_gemv";
    public const string LinearF16Gemv = "linear_f16w_gemv";
    public const string QuantizeActivations = "quantize_activations_q8_1";
    public const string LinearQ8_0Gemv = "linear_q8_0_gemv";
    public const string LinearQ4_0Gemv = "linear_q4_0_gemv";
    public const string LinearInt4GroupGemv = "linear_int4g_gemv";

    public const string RopeApply = "rope_apply_f32";
    public const string RopePositions = "rope_positions_f32";

    public const string ArgmaxRows = "argmax_rows_f32";
    public const string SampleRows = "sample_rows_f32";

    /// <summary>
    /// Entry points that take dynamic shared memory, with the bytes every launch of them gets (their layout in the
    /// .cu file; a kernel that finds less stops its launch). Above 48 KB the function's limit is raised at load.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, int> DynamicSharedBytes = new Dictionary<string, int>
    {
        // attention.cu: two stages of 64-key K and V tiles, rows padded by 8 halves.
        [AttentionPrefillHd64] = 2 * 2 * 64 * (64 + 8) * 2,
        [AttentionPrefillHd128] = 2 * 2 * 64 * (128 + 8) * 2,
    };

    /// <summary>kernels/NAME.cu → its entry points.</summary>
    public static readonly IReadOnlyDictionary<string, string[]> ByFile = new Dictionary<string, string[]>
    {
        ["attention"] = [AttentionPrefillHd64, AttentionPrefillHd128, AttentionKvToF16, AttentionKvToF16Int8, AttentionDecodePagedF32, AttentionDecodePagedInt8],
        ["elementwise"] = [Activation, AddBroadcast, ScaleBias, SwiGlu, SoftmaxRows, L2NormalizeRows, GatherRows, ScatterRows],
        ["kv_cache"] = [KvAppendF32, KvAppendInt8, KvCopyBlocks],
        ["norms"] = [RmsNorm, LayerNorm],
        ["patch_embed"] = [PatchEmbedF32, PatchEmbedF16],
        ["quant_matmul"] = [LinearF32Gemm, LinearF16Gemm, LinearQ8_0Gemm, LinearQ4_0Gemm, LinearInt4GroupGemm, LinearF32Gemv,
            LinearF16Gemv, QuantizeActivations, LinearQ8_0Gemv, LinearQ4_0Gemv, LinearInt4GroupGemv],
        ["rope"] = [RopeApply, RopePositions],
        ["sampling"] = [ArgmaxRows, SampleRows],
    };
}

/// <summary>
/// The compiled kernels (one fatbin per kernels/*.cu, embedded at build time when build/kernels holds them) loaded
/// into a context, every entry point of <see cref="CudaKernelNames"/> resolved up front.
/// </summary>
public sealed class CudaKernels : IDisposable
{
    internal const string ResourcePrefix = "FastMM.Cuda.kernels.";
    private readonly List<CudaModule> _modules = [];
    private readonly Dictionary<string, CudaFunction> _functions = [];

    private CudaKernels(CudaContext context, IReadOnlyDictionary<string, byte[]> images)
    {
        try
        {
            foreach (var (file, entries) in CudaKernelNames.ByFile)
            {
                var module = context.LoadModule(images[file], file + ".fatbin");
                _modules.Add(module);
                foreach (string entry in entries)
                {
                    var function = module.GetFunction(entry);
                    if (CudaKernelNames.DynamicSharedBytes.TryGetValue(entry, out int bytes)) function.UseDynamicSharedMemory(bytes);
                    _functions[entry] = function;
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public CudaFunction this[string entry] => _functions[entry];

    public static CudaKernels Load(CudaContext context) => new(context, ReadImages(typeof(CudaKernels).Assembly));

    /// <summary>Each kernel file's fatbin from <paramref name="assembly"/>'s resources, or an error naming the missing ones.</summary>
    internal static IReadOnlyDictionary<string, byte[]> ReadImages(Assembly assembly)
    {
        var images = new Dictionary<string, byte[]>();
        var missing = new List<string>();
        foreach (string file in CudaKernelNames.ByFile.Keys)
        {
            using var stream = assembly.GetManifestResourceStream(ResourcePrefix + file + ".fatbin");
            if (stream is null) { missing.Add(file + ".fatbin"); continue; }
            var bytes = new byte[stream.Length];
            stream.ReadExactly(bytes);
            images[file] = bytes;
        }
        if (missing.Count > 0)
            throw new FastMMException($"cuda: this build has no compiled kernels for {string.Join(", ", missing)} " +
                "(run scripts/check-kernels.sh or `cmake -S . -B build && cmake --build build` before building src/FastMM.Cuda)");
        return images;
    }

    public void Dispose()
    {
        foreach (var m in _modules) m.Dispose();
        _modules.Clear();
        _functions.Clear();
    }
}
