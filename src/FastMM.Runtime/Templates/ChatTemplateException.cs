namespace FastMM.Runtime.Templates;

/// <summary>
/// A chat template failed to parse or render. <see cref="TemplateMessage"/> is the bare reason
/// (for raise_exception: exactly the template author's text, which a server can show to its client).
/// </summary>
public sealed class ChatTemplateException : FastMMException
{
    public string SourceName { get; }
    public int Line { get; }
    public string TemplateMessage { get; }

    public ChatTemplateException(string sourceName, int line, string message)
        : base(line > 0 ? $"{sourceName} line {line}: {message}" : $"{sourceName}: {message}")
    {
        SourceName = sourceName;
        Line = line;
        TemplateMessage = message;
    }
}

/// <summary>Raised inside the interpreter; the renderer adds source name and line.</summary>
internal class TemplateError(string message) : Exception(message);

/// <summary>raise_exception(msg) from the template itself.</summary>
internal sealed class TemplateRaised(string message) : TemplateError(message);
