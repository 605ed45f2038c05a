using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;

namespace FastMM.Models.IO;

/// <summary>One array read from a .npy/.npz: its shape and values widened to double or long by kind.</summary>
public sealed class NpyArray
{
    public string Name { get; }
    public int[] Shape { get; }
    /// <summary>numpy's descr, e.g. "&lt;f4", "&lt;i8".</summary>
    public string Descr { get; }
    public bool IsInteger { get; }
    private readonly float[]? _floats;
    private readonly long[]? _ints;

    internal NpyArray(string name, int[] shape, string descr, float[]? floats, long[]? ints)
    {
        Name = name; Shape = shape; Descr = descr; _floats = floats; _ints = ints; IsInteger = ints is not null;
    }

    public static NpyArray Float32(string name, float[] data, params int[] shape) => new(name, shape, "<f4", data, null);
    public static NpyArray Int64(string name, long[] data, params int[] shape) => new(name, shape, "<i8", null, data);

    public long Length => Tensor.Product(Shape);

    public float[] Floats(string source) => _floats ?? throw new FastMMException($"{source}: '{Name}' must be a floating-point array, got dtype {Descr}");
    public long[] Ints(string source) => _ints ?? throw new FastMMException($"{source}: '{Name}' must be an integer array, got dtype {Descr}");

    /// <summary>Fails naming the array unless it has this rank (and these dims where not -1).</summary>
    public void ExpectShape(string source, params int[] dims)
    {
        bool ok = Shape.Length == dims.Length;
        for (int i = 0; ok && i < dims.Length; i++) ok = dims[i] < 0 || dims[i] == Shape[i];
        if (!ok)
            throw new FastMMException($"{source}: '{Name}' has shape [{string.Join(", ", Shape)}], expected [{string.Join(", ", dims.Select(d => d < 0 ? "?" : d.ToString()))}]");
    }
}

/// <summary>Reads and writes numpy .npz archives (np.savez / np.savez_compressed) of little-endian C-order arrays.</summary>
public static partial class Npz
{
    private const long MaxArrayBytes = 4L << 30;

    public static Dictionary<string, NpyArray> Read(string path)
    {
        if (!File.Exists(path)) throw new FastMMException($"{path}: file not found");
        var result = new Dictionary<string, NpyArray>(StringComparer.Ordinal);
        ZipArchive zip;
        try { zip = ZipFile.OpenRead(path); }
        catch (InvalidDataException e) { throw new FastMMException($"{path}: not an .npz archive ({e.Message})"); }
        using (zip)
        {
            foreach (var entry in zip.Entries)
            {
                if (!entry.FullName.EndsWith(".npy", StringComparison.Ordinal)) continue;
                string name = entry.FullName[..^4];
                if (entry.Length > MaxArrayBytes) throw new FastMMException($"{path}: array '{name}' is larger than {MaxArrayBytes} bytes");
                byte[] bytes = new byte[entry.Length];
                try
                {
                    using var s = entry.Open();
                    s.ReadExactly(bytes);
                }
                catch (Exception e) when (e is InvalidDataException or EndOfStreamException or IOException)
                {
                    throw new FastMMException($"{path}: array '{name}' could not be read ({e.Message})");
                }
                result[name] = ParseNpy(bytes, name, $"{path}:{entry.FullName}");
            }
        }
        return result;
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([^']*)'")] private static partial Regex DescrRx();
    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")] private static partial Regex FortranRx();
    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")] private static partial Regex ShapeRx();

    public static NpyArray ParseNpy(ReadOnlySpan<byte> b, string name, string source)
    {
        if (b.Length < 10 || b[0] != 0x93 || !b.Slice(1, 5).SequenceEqual("NUMPY"u8)) throw new FastMMException($"{source}: not a .npy array (bad magic)");
        int major = b[6];
        int headerLen, pos;
        if (major == 1) { headerLen = BinaryPrimitives.ReadUInt16LittleEndian(b[8..]); pos = 10; }
        else if (major is 2 or 3)
        {
            if (b.Length < 12) throw new FastMMException($"{source}: truncated .npy header");
            uint hl = BinaryPrimitives.ReadUInt32LittleEndian(b[8..]);
            if (hl > 1 << 20) throw new FastMMException($"{source}: .npy header length {hl} is implausible");
            headerLen = (int)hl; pos = 12;
        }
        else throw new FastMMException($"{source}: unsupported .npy version {major}");
        if (pos + headerLen > b.Length) throw new FastMMException($"{source}: .npy header runs past the end of the data");
        string header = Encoding.Latin1.GetString(b.Slice(pos, headerLen));
        var d = DescrRx().Match(header); var f = FortranRx().Match(header); var s = ShapeRx().Match(header);
        if (!d.Success || !f.Success || !s.Success) throw new FastMMException($"{source}: malformed .npy header {header.Trim()}");
        bool fortran = f.Groups[1].Value == "True";
        var dims = s.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var shape = new int[dims.Length];
        long count = 1;
        for (int i = 0; i < dims.Length; i++)
        {
            if (!int.TryParse(dims[i].TrimEnd('L'), out shape[i]) || shape[i] < 0) throw new FastMMException($"{source}: bad dimension '{dims[i]}' in .npy shape");
            count = checked(count * shape[i]);
        }
        string descr = d.Groups[1].Value;
        var data = b[(pos + headerLen)..];
        int size = descr.Length >= 3 && int.TryParse(descr.AsSpan(2), out int sz) ? sz : 0;
        char kind = descr.Length >= 2 ? descr[1] : '?';
        if (descr[0] == '>' && size > 1) throw new FastMMException($"{source}: big-endian dtype {descr} is not supported");
        if (size == 0 || "fiub".IndexOf(kind) < 0) throw new FastMMException($"{source}: unsupported dtype {descr}");
        if (data.Length < count * size) throw new FastMMException($"{source}: array data is truncated ({data.Length} bytes, shape needs {count * size})");

        if (kind == 'f')
        {
            var fl = new float[count];
            for (long i = 0; i < count; i++)
            {
                var e = data.Slice((int)(i * size), size);
                fl[i] = size switch
                {
                    4 => BinaryPrimitives.ReadSingleLittleEndian(e),
                    8 => (float)BinaryPrimitives.ReadDoubleLittleEndian(e),
                    2 => (float)BinaryPrimitives.ReadHalfLittleEndian(e),
                    _ => throw new FastMMException($"{source}: unsupported dtype {descr}"),
                };
            }
            return new NpyArray(name, shape, descr, fortran ? ToCOrder(fl, shape) : fl, null);
        }
        var il = new long[count];
        for (long i = 0; i < count; i++)
        {
            var e = data.Slice((int)(i * size), size);
            il[i] = (kind, size) switch
            {
                ('i', 8) => BinaryPrimitives.ReadInt64LittleEndian(e),
                ('i', 4) => BinaryPrimitives.ReadInt32LittleEndian(e),
                ('i', 2) => BinaryPrimitives.ReadInt16LittleEndian(e),
                ('i', 1) => (sbyte)e[0],
                ('u', 8) => checked((long)BinaryPrimitives.ReadUInt64LittleEndian(e)),
                ('u', 4) => BinaryPrimitives.ReadUInt32LittleEndian(e),
                ('u', 2) => BinaryPrimitives.ReadUInt16LittleEndian(e),
                ('u', 1) or ('b', 1) => e[0],
                _ => throw new FastMMException($"{source}: unsupported dtype {descr}"),
            };
        }
        return new NpyArray(name, shape, descr, null, fortran ? ToCOrder(il, shape) : il);
    }

    /// <summary>Reorders a column-major (Fortran) array to row-major; numpy writes transposed views this way.</summary>
    private static T[] ToCOrder<T>(T[] src, int[] shape)
    {
        if (shape.Length < 2) return src;
        var dst = new T[src.Length];
        var idx = new int[shape.Length];
        for (long f = 0; f < src.Length; f++)
        {
            long c = 0;
            for (int d = 0; d < shape.Length; d++) c = c * shape[d] + idx[d];
            dst[c] = src[f];
            for (int d = 0; d < shape.Length; d++) // column-major: first index runs fastest
            {
                if (++idx[d] < shape[d]) break;
                idx[d] = 0;
            }
        }
        return dst;
    }

    /// <summary>Writes arrays as an uncompressed .npz (like np.savez): float32 as &lt;f4, integers as &lt;i8.</summary>
    public static void Write(string path, IEnumerable<NpyArray> arrays)
    {
        string tmp = path + ".tmp";
        using (var fs = File.Create(tmp))
        using (var zip = new ZipArchive(fs, ZipArchiveMode.Create))
        {
            foreach (var a in arrays)
            {
                var entry = zip.CreateEntry(a.Name + ".npy", CompressionLevel.NoCompression);
                using var s = entry.Open();
                WriteNpy(s, a);
            }
        }
        File.Move(tmp, path, overwrite: true);
    }

    private static void WriteNpy(Stream s, NpyArray a)
    {
        string shape = a.Shape.Length == 1 ? $"({a.Shape[0]},)" : "(" + string.Join(", ", a.Shape) + ")";
        string dict = $"{{'descr': '{a.Descr}', 'fortran_order': False, 'shape': {shape}, }}";
        int total = 10 + dict.Length + 1;
        int pad = (64 - total % 64) % 64;
        string header = dict + new string(' ', pad) + "\n";
        Span<byte> pre = stackalloc byte[10];
        pre[0] = 0x93; "NUMPY"u8.CopyTo(pre[1..]); pre[6] = 1; pre[7] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(pre[8..], (ushort)header.Length);
        s.Write(pre);
        s.Write(Encoding.Latin1.GetBytes(header));
        if (a.IsInteger)
        {
            var ints = a.Ints("write");
            var buf = new byte[8 * ints.Length];
            for (int i = 0; i < ints.Length; i++) BinaryPrimitives.WriteInt64LittleEndian(buf.AsSpan(i * 8), ints[i]);
            s.Write(buf);
        }
        else
        {
            var fl = a.Floats("write");
            s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(fl.AsSpan()));
        }
    }
}
