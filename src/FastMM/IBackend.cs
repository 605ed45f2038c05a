namespace FastMM;

public enum Activation
{
    None,
    /// <summary>Exact erf GELU (HF "gelu").</summary>
    Gelu,
    /// <summary>tanh-approximated GELU (HF "gelu_pytorch_tanh", "gelu_new").</summary>
    GeluTanh,
    /// <summary>x * sigmoid(1.702 x) (HF "quick_gelu", OpenAI CLIP).</summary>
    QuickGelu,
    Silu,
    Relu,
}

public static class ActivationNames
{
    /// <summary>Maps an HF config <c>hidden_act</c> string to an activation, or fails naming the field.</summary>
    public static Activation Parse(string hfName, string field = "hidden_act") => hfName switch
    {
        "gelu" => Activation.Gelu,
        "gelu_pytorch_tanh" or "gelu_new" or "gelu_fast" => Activation.GeluTanh,
        "quick_gelu" => Activation.QuickGelu,
        "silu" or "swish" => Activation.Silu,
        "relu" => Activation.Relu,
        _ => throw new FastMMException($"{field}: unsupported activation '{hfName}' (supported: gelu, gelu_pytorch_tanh, gelu_new, quick_gelu, silu, relu)"),
    };
}

/// <summary>
/// The op set every model family is written against. The CPU backend is the reference implementation;
/// GPU backends (kernels/ for CUDA, ILGPU) implement the same ops and are held to it by one conformance suite.
/// Tensors are F32, row-major, contiguous. Ops return new tensors owned by the caller (dispose them) unless named *InPlace.
/// </summary>
public interface IBackend : IDisposable
{
    string Name { get; }

    /// <summary>
    /// Where this backend computes below F32, declared rather than hidden: the conformance suite holds the ops named here
    /// to the F16 bound against an F32 reference, every other op to the F32 bound against the CPU. F32 everywhere by default.
    /// </summary>
    BackendPrecision Precision => BackendPrecision.F32;

    // ---- memory ----
    Tensor Zeros(params int[] shape);
    Tensor FromHost(ReadOnlySpan<float> data, params int[] shape);
    void ToHost(Tensor t, Span<float> dst);
    /// <summary>Uploads a stored weight (F32/F16/BF16) as an F32 tensor.</summary>
    Tensor Weight(in TensorData w);
    /// <summary>Prepares an HF Linear weight [out, in] (and optional bias [out]) in the backend's fastest layout.</summary>
    LinearWeight Linear(in TensorData weight, in TensorData? bias);
    LinearWeight Linear(ReadOnlySpan<float> weight, int outFeatures, int inFeatures, ReadOnlySpan<float> bias);
    /// <summary>
    /// Prepares an HF Linear weight [out, in] stored as <paramref name="type"/>: block formats are quantized here (a
    /// <see cref="FastMMException"/> names the sizes when in_features is not a multiple of the block); plain formats
    /// (f32, f16, bf16) keep the weights rounded to that type.
    /// </summary>
    LinearWeight Linear(in TensorData weight, in TensorData? bias, Quant.QuantType type);
    /// <summary>Prepares an already quantized weight (e.g. read from a GGUF file); bias is empty or [out].</summary>
    LinearWeight Linear(Quant.QuantizedMatrix weight, ReadOnlySpan<float> bias);
    /// <summary>Returns a tensor's storage to the backend; called by <see cref="Tensor.Dispose"/>.</summary>
    void Release(Tensor t);

    // ---- ops ----
    /// <summary>y[..., N] = x[..., K] · Wᵀ + b, then the activation.</summary>
    Tensor Linear(Tensor x, LinearWeight w, Activation act = Activation.None);
    /// <summary>C[M, N] = A[M, K] · B[N, K]ᵀ for two activations (no prepared layout).</summary>
    Tensor MatMulTransposed(Tensor a, Tensor b);
    Tensor LayerNorm(Tensor x, Tensor gamma, Tensor beta, float eps);
    void ActivationInPlace(Tensor x, Activation act);
    /// <summary>x += y, where y's shape equals x's trailing dims (broadcast over leading dims).</summary>
    void AddInPlace(Tensor x, Tensor y);
    /// <summary>x = x * scale + bias, elementwise.</summary>
    void ScaleInPlace(Tensor x, float scale, float bias = 0f);
    /// <summary>Each row of the last dim divided by its L2 norm.</summary>
    void L2NormalizeInPlace(Tensor x);

    /// <summary>
    /// Fused multi-head attention. q [B, Tq, H·D], k and v [B, Tk, H·D] → [B, Tq, H·D].
    /// keyMask [B, Tk] (1 = attend, 0 = padding) may be null; causal masks key j &gt; query i.
    /// </summary>
    Tensor Attention(Tensor q, Tensor k, Tensor v, int heads, float scale, bool causal, Tensor? keyMask);

    /// <summary>
    /// Self-attention over one fused projection: qkv [B, T, 3·H·D] holding q, k, v side by side per token
    /// (as one Linear with the three weights stacked produces it) → [B, T, H·D]. Saves two GEMM launches and a split.
    /// </summary>
    Tensor SelfAttention(Tensor qkv, int heads, float scale, bool causal, Tensor? keyMask);

    /// <summary>
    /// Patch-embedding convolution (kernel = stride = patch, no padding): pixels [B, C, H, W] and the conv
    /// weight [D, C, P, P] prepared as a Linear [D, C·P·P] (with the conv bias, if any) → [B, (H/P)·(W/P), D],
    /// patches in row-major order.
    /// </summary>
    Tensor PatchEmbed(Tensor pixels, LinearWeight weight, int patch);

    // ---- decoder (Llama / Qwen2) ----
    /// <summary>RMSNorm over the last dim as HF Llama: x · rsqrt(mean(x²) + eps) · weight.</summary>
    Tensor RmsNorm(Tensor x, Tensor weight, float eps);
    /// <summary>[count, headDim] rotary table for positions position0…: cos in the first half, sin in the second (HF default RoPE).</summary>
    Tensor RopeTable(int position0, int count, int headDim, double theta);
    /// <summary>Rotates (HF rotate_half convention) the q heads and k heads of fused rows qkv [T, (Hq + 2·Hkv)·D] in place; row i uses table row i.</summary>
    void RopeInPlace(Tensor qkv, int qHeads, int kvHeads, int headDim, Tensor table);
    /// <summary>gateUp [..., 2I] → silu(gate) · up [..., I] (gate in the first half).</summary>
    Tensor SwiGlu(Tensor gateUp);
    /// <summary>A KV pool of the given storage type; a backend that cannot hold that type throws NotSupportedException, never falls back.</summary>
    Kv.KvCacheStorage CreateKvCache(int layers, int kvHeads, int headDim, int blockSize, int blocks, Kv.KvCacheType type);
    /// <summary>
    /// Copies the k and v parts of fused rows qkv [T, (Hq + 2·Hkv)·D] into the cache at positions position0 … position0+T−1
    /// (quantizing them for an int8 cache).
    /// </summary>
    void WriteKv(Kv.KvCacheStorage cache, int layer, Tensor qkv, int qHeads, ReadOnlySpan<int> blockTable, int position0);
    /// <summary>
    /// Causal grouped-query attention of the q part of qkv [T, …] (tokens at positions position0 …) over the cached
    /// keys/values 0 … position0+T−1 → [T, Hq·D]. An int8 cache is dequantized inside the kernel as it is read.
    /// </summary>
    Tensor CachedAttention(Tensor qkv, int qHeads, Kv.KvCacheStorage cache, int layer, ReadOnlySpan<int> blockTable, int position0, float scale);
    /// <summary>x[rows[i]] = values[i] for x [T, D] and values [n, D] (e.g. image features into token embeddings).</summary>
    void SetRows(Tensor x, ReadOnlySpan<int> rows, Tensor values);

    /// <summary>
    /// Idefics3's pixel shuffle: x [B, S·S, E] (an S×S patch grid) → [B, S·S/s², E·s²], each output row holding an
    /// s×s neighbourhood in HF's order: out[b, h2·(S/s)+w2, k] = x[b, (h2·s + k / (s·E))·S + w2·s + (k mod s·E) / E, k mod E].
    /// </summary>
    Tensor PixelShuffle(Tensor x, int scale);

    /// <summary>Rows of table [V, D] gathered by ids → [ids.Length, D]. An id outside [0, V) is an error naming it.</summary>
    Tensor Embedding(Tensor table, ReadOnlySpan<int> ids);
    /// <summary>x [B, T, D] with row [D] put in front of each sequence → [B, T+1, D].</summary>
    Tensor PrependRow(Tensor x, Tensor row);
    /// <summary>x [B, T, D] → [B, D] taking position positions[b] of sequence b.</summary>
    Tensor SelectRows(Tensor x, ReadOnlySpan<int> positions);
    /// <summary>row [D] repeated → [B, 1, D] (e.g. an attention-pooling probe).</summary>
    Tensor Repeat(Tensor row, int batch);
}

/// <summary>The ops a backend runs with F16 operands (F32 accumulation) on tensor cores; see <see cref="IBackend.Precision"/>.</summary>
/// <param name="F16Attention">Attention, SelfAttention and multi-row (prefill) CachedAttention round q, k and v to F16.</param>
/// <param name="F16LinearMinRows">
/// Linear over quantized or F16 weights with at least this many rows (prefill, vision) rounds the activations to F16 and
/// multiplies by the dequantized weights, instead of the CPU's int8-quantized activations; int.MaxValue: never.
/// </param>
public sealed record BackendPrecision(bool F16Attention = false, int F16LinearMinRows = int.MaxValue)
{
    public static BackendPrecision F32 { get; } = new();

    public override string ToString()
    {
        var parts = new List<string>();
        if (F16Attention) parts.Add("attention with F16 operands");
        if (F16LinearMinRows != int.MaxValue) parts.Add($"quantized/F16-weight Linear with F16 activations from {F16LinearMinRows} rows");
        return parts.Count == 0 ? "F32" : string.Join("; ", parts);
    }
}

/// <summary>An HF Linear weight prepared by a backend; owns its memory.</summary>
public abstract class LinearWeight : IDisposable
{
    public int OutFeatures { get; protected init; }
    public int InFeatures { get; protected init; }
    /// <summary>Bytes of stored weight data one product reads (packed F32 panels, or the quantized blocks).</summary>
    public long WeightBytes { get; protected init; }
    public abstract void Dispose();
}

/// <summary>
/// A backend with memory of its own (a GPU): the device-to-device copy bandwidth measured now, in GB/s counting bytes
/// read plus bytes written, so benchmarks can state a roofline bound taken in the same process.
/// </summary>
public interface IDeviceBandwidth
{
    string DeviceName { get; }
    double MeasureCopyBandwidth();
}

/// <summary>
/// A backend that picks greedy tokens where the logits are (a GPU): a token id comes back to the host instead of a
/// row of logits per token. The first maximum wins, as torch.argmax; a NaN or +inf logit is an error.
/// </summary>
public interface IDeviceArgmax
{
    /// <summary>The first maximum of each row of logits [rows, vocab].</summary>
    int[] Argmax(Tensor logits);
}

/// <summary>
/// A backend that can replay a repeated sequence of ops (a decode step) as one recorded graph: a token then costs one
/// launch instead of hundreds. Ops issued between <see cref="BeginStep"/> and <see cref="IStepScope.Commit"/> are
/// deferred and run at Commit; the tensors they return stay valid until the step after the next one begins (a later
/// use fails loudly), so step n's logits can be read while step n + 1 is recorded. No op inside a step may read back
/// to the host. A step whose ops differ from the recorded ones (new shapes or arguments) is recorded anew, so the
/// caller does not track when that happens.
/// </summary>
public interface IStepGraphs
{
    IStepScope BeginStep();

    /// <summary>Committed steps so far: replayed from a recorded graph, recorded anew, or run op by op (graphs turned off).</summary>
    (long Replays, long Captures, long Eager) StepCounts { get; }

    /// <summary>Device operations (kernels and copies) the last committed step ran, after any fusion.</summary>
    int OpsPerStep { get; }

    /// <summary>Mean host time per committed step: recording its ops (BeginStep to Commit), and committing them.</summary>
    (double RecordMs, double CommitMs) StepHostMs { get; }
}

/// <summary>
/// An open step: <see cref="Commit"/> runs it; disposing without Commit (an exception) drops its work. A step may be
/// recorded before its input token is known: record the embedding with <see cref="DeferredTokenEmbedding"/>,
/// <see cref="Seal"/> it (its work is prepared while the previous step runs, and other ops may run eagerly again),
/// then <see cref="SetTokens"/> and Commit once the token is sampled.
/// </summary>
public interface IStepScope : IDisposable
{
    void Commit();

    /// <summary>Ends the recording without running the step; until Commit, ops run eagerly again (before the step on the device).</summary>
    void Seal();

    /// <summary>Rows of <paramref name="table"/> [vocab, D] for <paramref name="count"/> token ids given later through <see cref="SetTokens"/>.</summary>
    Tensor DeferredTokenEmbedding(Tensor table, int count);

    /// <summary>The ids of the deferred embedding (checked against the vocabulary), before Commit.</summary>
    void SetTokens(ReadOnlySpan<int> ids);
}
