using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace FastMM.Models.IO;

/// <summary>
/// Writes a .safetensors file: 8-byte header length, JSON header (names sorted, offsets in order), data.
/// Tensors are produced one at a time by a callback, so multi-GB files never sit in memory whole.
/// </summary>
public static class SafetensorsWriter
{
    /// <summary>A float tensor produced as F32 values and stored as F32, F16 or BF16.</summary>
    public sealed record Entry(string Name, DType DType, int[] Shape, Action<Span<float>> Fill);

    /// <summary>A tensor whose stored bytes are produced as they are (any safetensors dtype name, e.g. "U8", "I64").</summary>
    public sealed record RawEntry(string Name, string StoredType, int[] Shape, long ByteLength, Func<byte[]> Bytes);

    public static void Write(string path, IReadOnlyList<Entry> entries, IReadOnlyDictionary<string, string>? metadata = null, Action<int, int>? progress = null)
        => WriteRaw(path, entries.Select(ToRaw).ToList(), metadata, progress);

    public static void WriteRaw(string path, IReadOnlyList<RawEntry> entries, IReadOnlyDictionary<string, string>? metadata = null, Action<int, int>? progress = null)
    {
        var sorted = entries.OrderBy(e => e.Name, StringComparer.Ordinal).ToList();
        var header = new Dictionary<string, object>();
        if (metadata is not null) header["__metadata__"] = metadata;
        long offset = 0;
        foreach (var e in sorted)
        {
            header[e.Name] = new { dtype = e.StoredType, shape = e.Shape, data_offsets = new[] { offset, offset + e.ByteLength } };
            offset += e.ByteLength;
        }
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(header);
        int pad = (8 - json.Length % 8) % 8;
        using var fs = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        fs.Write(BitConverter.GetBytes((ulong)(json.Length + pad)));
        fs.Write(json);
        fs.Write(Encoding.ASCII.GetBytes(new string(' ', pad)));
        for (int i = 0; i < sorted.Count; i++)
        {
            var bytes = sorted[i].Bytes();
            if (bytes.LongLength != sorted[i].ByteLength) throw new InvalidOperationException($"{sorted[i].Name}: produced {bytes.LongLength} bytes, declared {sorted[i].ByteLength}");
            fs.Write(bytes);
            progress?.Invoke(i + 1, sorted.Count);
        }
    }

    private static RawEntry ToRaw(Entry e)
    {
        if (e.DType is not (DType.F32 or DType.F16 or DType.BF16)) throw new ArgumentException($"{e.Name}: only float tensors can be written");
        long count = Tensor.Product(e.Shape);
        return new RawEntry(e.Name, e.DType.ToString(), e.Shape, count * DTypeInfo.SizeOf(e.DType), () =>
        {
            var values = new float[count];
            e.Fill(values);
            return FloatsAs(values, e.DType);
        });
    }

    /// <summary>F32 values in a stored float type's bytes (BF16 rounds to nearest even, as torch does).</summary>
    public static byte[] FloatsAs(ReadOnlySpan<float> values, DType type)
    {
        switch (type)
        {
            case DType.F32:
                return MemoryMarshal.AsBytes(values).ToArray();
            case DType.F16:
                {
                    var h = new Half[values.Length];
                    System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(values, h);
                    return MemoryMarshal.AsBytes(h.AsSpan()).ToArray();
                }
            case DType.BF16:
                {
                    var h = new ushort[values.Length];
                    for (int j = 0; j < values.Length; j++)
                    {
                        uint bits = BitConverter.SingleToUInt32Bits(values[j]);
                        h[j] = (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
                    }
                    return MemoryMarshal.AsBytes(h.AsSpan()).ToArray();
                }
            default:
                throw new ArgumentException($"{type} is not a stored float type");
        }
    }
}
