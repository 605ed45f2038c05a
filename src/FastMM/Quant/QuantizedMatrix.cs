using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using FastMM.Cpu;

namespace FastMM.Quant;

/// <summary>
/// A weight matrix of <see cref="Rows"/> (out features, N) × <see cref="Columns"/> (in features, K) stored row-major in
/// a <see cref="QuantFormat"/>: row n is <see cref="RowBytes"/> consecutive bytes, exactly as GGUF lays out a tensor of
/// that type. The bytes live in a pinned, 64-byte aligned array so kernels read them through a raw pointer.
/// </summary>
public sealed unsafe class QuantizedMatrix
{
    private readonly byte[] _storage;
    private readonly int _offset;

    public QuantFormat Format { get; }
    public QuantType Type => Format.Type;
    public int Rows { get; }
    public int Columns { get; }
    public long RowBytes { get; }
    public long ByteSize { get; }

    public ReadOnlySpan<byte> Bytes => _storage.AsSpan(_offset, (int)ByteSize);
    public ReadOnlySpan<byte> Row(int row) => _storage.AsSpan(_offset + checked((int)(row * RowBytes)), (int)RowBytes);

    /// <summary>The first byte; valid for the matrix's lifetime (the array is pinned).</summary>
    internal byte* Pointer => (byte*)Unsafe.AsPointer(ref _storage[_offset]);

    private QuantizedMatrix(QuantFormat format, int rows, int columns, string? name)
    {
        format.CheckColumns(rows, columns, name);
        Format = format; Rows = rows; Columns = columns;
        RowBytes = format.RowBytes(columns);
        ByteSize = rows * RowBytes;
        if (ByteSize > Array.MaxLength - 64)
            throw new FastMMException($"{QuantFormat.Label(name)}a {rows}x{columns} {format.Name} matrix needs {ByteSize} bytes, more than one CPU array holds");
        _storage = GC.AllocateUninitializedArray<byte>((int)ByteSize + 64, pinned: true);
        nint start = (nint)Unsafe.AsPointer(ref _storage[0]);
        _offset = (int)(((start + 63) & ~(nint)63) - start);
    }

    /// <summary>
    /// Quantizes row-major float weights [rows, columns]. Fails with a <see cref="FastMMException"/> naming the sizes when
    /// columns is not a multiple of the format's block, and naming the row when a weight is not finite or exceeds what the
    /// format's fp16 scales can represent.
    /// </summary>
    public static QuantizedMatrix Quantize(ReadOnlySpan<float> weights, int rows, int columns, QuantType type, string? name = null)
    {
        var format = QuantFormats.Get(type);
        format.CheckColumns(rows, columns, name);
        if (weights.Length != (long)rows * columns)
            throw new ArgumentException($"{weights.Length} weights do not fill a {rows}x{columns} matrix");
        for (int r = 0; r < rows; r++)
        {
            float peak = MathF.Abs(TensorPrimitives.MaxMagnitude(weights.Slice(r * columns, columns)));
            if (!(peak <= format.MaxMagnitude))
                throw new FastMMException($"{QuantFormat.Label(name)}row {r} holds a weight of magnitude {peak}, which {format.Name} cannot store (limit {format.MaxMagnitude})");
        }
        var m = new QuantizedMatrix(format, rows, columns, name);
        fixed (float* src = weights)
        {
            // Rows are independent; spread large matrices over the pool (this runs once, at load).
            nint s = (nint)src;
            CpuParallel.For(rows, r => format.QuantizeRow(
                new ReadOnlySpan<float>((float*)s + (long)r * columns, columns),
                new Span<byte>(m.Pointer + r * m.RowBytes, (int)m.RowBytes)));
        }
        return m;
    }

    /// <summary>Wraps pre-quantized bytes (e.g. a GGUF tensor's data), checking that their length is exactly rows × row bytes.</summary>
    public static QuantizedMatrix FromBytes(ReadOnlySpan<byte> bytes, int rows, int columns, QuantType type, string? name = null)
    {
        var format = QuantFormats.Get(type);
        format.CheckColumns(rows, columns, name);
        long expected = rows * format.RowBytes(columns);
        if (bytes.Length != expected)
            throw new FastMMException($"{QuantFormat.Label(name)}a {rows}x{columns} {format.Name} matrix is {expected} bytes ({rows} rows of {format.RowBytes(columns)}), got {bytes.Length}");
        var m = new QuantizedMatrix(format, rows, columns, name);
        bytes.CopyTo(m._storage.AsSpan(m._offset, (int)expected));
        return m;
    }

    /// <summary>Reconstructs row <paramref name="row"/> as floats (dst.Length = <see cref="Columns"/>).</summary>
    public void Dequantize(int row, Span<float> dst)
    {
        if ((uint)row >= (uint)Rows) throw new ArgumentOutOfRangeException(nameof(row), $"row {row} outside [0, {Rows})");
        if (dst.Length != Columns) throw new ArgumentException($"destination has {dst.Length} elements, a row has {Columns}");
        Format.DequantizeRow(Row(row), dst);
    }

    /// <summary>All rows as a row-major float array [Rows, Columns].</summary>
    public float[] DequantizeAll()
    {
        var all = new float[(long)Rows * Columns];
        for (int r = 0; r < Rows; r++) Dequantize(r, all.AsSpan(r * Columns, Columns));
        return all;
    }
}
