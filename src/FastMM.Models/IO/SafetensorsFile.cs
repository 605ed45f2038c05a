using System.IO.MemoryMappedFiles;
using System.Text.Json;

namespace FastMM.Models.IO;

/// <summary>
/// A memory-mapped .safetensors file. The header is validated completely before any tensor is handed out:
/// every entry's dtype, shape and byte range must agree and lie inside the file, and ranges may not overlap,
/// so later reads can never leave the mapping.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    /// <summary>Headers larger than this are refused (the format's reference loader uses the same bound).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly Dictionary<string, TensorData> _tensors = new(StringComparer.Ordinal);

    public string Path { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public IEnumerable<string> Names => _tensors.Keys;
    public int Count => _tensors.Count;

    private SafetensorsFile(string path, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* basePtr, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path; _map = map; _view = view; _base = basePtr; Metadata = metadata;
    }

    public static SafetensorsFile Open(string path)
    {
        string name = System.IO.Path.GetFileName(path);
        if (!File.Exists(path)) throw new FastMMException($"{path}: weight file not found");
        long length = new FileInfo(path).Length;
        if (length < 8) throw new FastMMException($"{name}: file is {length} bytes, too short for a safetensors header (truncated?)");

        MemoryMappedFile map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            p += view.PointerOffset;
            var file = Parse(path, name, p, length, map, view);
            return file;
        }
        catch
        {
            if (view is not null) { view.SafeMemoryMappedViewHandle.ReleasePointer(); view.Dispose(); }
            map.Dispose();
            throw;
        }
    }

    private static SafetensorsFile Parse(string path, string name, byte* p, long length, MemoryMappedFile map, MemoryMappedViewAccessor view)
    {
        ulong headerLen = *(ulong*)p; // little-endian on every platform .NET supports here
        if (headerLen > (ulong)(length - 8))
            throw new FastMMException($"{name}: header length {headerLen} runs past the end of the {length}-byte file (truncated or not a safetensors file)");
        if (headerLen > MaxHeaderBytes)
            throw new FastMMException($"{name}: header length {headerLen} exceeds the {MaxHeaderBytes}-byte limit");
        var header = new ReadOnlySpan<byte>(p + 8, (int)headerLen);
        long dataStart = 8 + (long)headerLen;
        long dataLen = length - dataStart;

        JsonDocument doc;
        try { doc = JsonDocument.Parse(header.ToArray(), new JsonDocumentOptions { MaxDepth = 16 }); }
        catch (JsonException e) { throw new FastMMException($"{name}: header is not valid JSON ({e.Message})"); }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new FastMMException($"{name}: header must be a JSON object");
            var meta = new Dictionary<string, string>();
            var entries = new List<(string Name, DType? Type, string TypeName, int[] Shape, long Begin, long End)>();
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind == JsonValueKind.Object)
                        foreach (var m in prop.Value.EnumerateObject())
                            meta[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                    continue;
                }
                entries.Add(ParseEntry(name, prop));
            }

            // Byte ranges: inside the data section and pairwise disjoint.
            var sorted = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
            long prevEnd = 0; string? prevName = null;
            foreach (var e in sorted)
            {
                if (e.End > dataLen)
                    throw new FastMMException($"{name}: tensor '{e.Name}' data_offsets [{e.Begin}, {e.End}] run past the end of the data section ({dataLen} bytes; file truncated?)");
                if (e.Begin < prevEnd && e.End > e.Begin)
                    throw new FastMMException($"{name}: tensor '{e.Name}' data_offsets [{e.Begin}, {e.End}] overlap tensor '{prevName}' (ends at {prevEnd})");
                if (e.End > prevEnd) { prevEnd = e.End; prevName = e.Name; }
            }

            var file = new SafetensorsFile(path, map, view, p, meta);
            foreach (var e in entries)
                file._tensors[e.Name] = e.Type is DType t
                    ? new TensorData(e.Name, t, e.Shape, p + dataStart + e.Begin, e.End - e.Begin)
                    : new TensorData(e.Name, DType.Unsupported, e.Shape, p + dataStart + e.Begin, e.End - e.Begin, e.TypeName);
            return file;
        }
    }

    private static (string, DType?, string, int[], long, long) ParseEntry(string file, JsonProperty prop)
    {
        string t = prop.Name;
        var v = prop.Value;
        if (v.ValueKind != JsonValueKind.Object) throw new FastMMException($"{file}: header entry '{t}' is not an object");
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String) throw new FastMMException($"{file}: tensor '{t}' has no dtype string");
        if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array) throw new FastMMException($"{file}: tensor '{t}' has no shape array");
        if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new FastMMException($"{file}: tensor '{t}' needs data_offsets [begin, end]");

        string typeName = dt.GetString()!;
        (DType? type, int size) = typeName switch
        {
            "F32" => (DType.F32, 4),
            "F16" => (DType.F16, 2),
            "BF16" => (DType.BF16, 2),
            "I32" => (DType.I32, 4),
            "I64" => (DType.I64, 8),
            // Known to the format but not computed with: kept so unused entries (e.g. int buffers) do not fail the load.
            "F64" or "U64" => ((DType?)null, 8),
            "U32" => (null, 4),
            "I16" or "U16" => (null, 2),
            "I8" or "U8" or "BOOL" or "F8_E4M3" or "F8_E5M2" => (null, 1),
            _ => throw new FastMMException($"{file}: tensor '{t}' has unknown dtype '{typeName}'"),
        };

        var shape = new int[sh.GetArrayLength()];
        if (shape.Length > 8) throw new FastMMException($"{file}: tensor '{t}' has {shape.Length} dimensions (at most 8 supported)");
        long count = 1;
        int i = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0 || dim > int.MaxValue)
                throw new FastMMException($"{file}: tensor '{t}' has an invalid dimension {d.GetRawText()} in its shape");
            shape[i++] = (int)dim;
            count = checked(count * dim);
            if (count > (1L << 40)) throw new FastMMException($"{file}: tensor '{t}' shape is implausibly large");
        }
        long begin = ReadOffset(file, t, off[0]), end = ReadOffset(file, t, off[1]);
        if (end < begin) throw new FastMMException($"{file}: tensor '{t}' data_offsets end {end} is before begin {begin}");
        if (end - begin != count * size)
            throw new FastMMException($"{file}: tensor '{t}' has {end - begin} bytes but {typeName} shape [{string.Join(", ", shape)}] needs {count * size}");
        return (t, type, typeName, shape, begin, end);
    }

    private static long ReadOffset(string file, string t, JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out long v) || v < 0)
            throw new FastMMException($"{file}: tensor '{t}' has an invalid data offset {e.GetRawText()}");
        return v;
    }

    public bool TryGet(string name, out TensorData tensor) => _tensors.TryGetValue(name, out tensor);

    public void Dispose()
    {
        if (_view is not null) { _view.SafeMemoryMappedViewHandle.ReleasePointer(); _view.Dispose(); }
        _map?.Dispose();
    }
}
