"""What the app's pages read, draw and do: run views, figures, the bundled demo, the actions
behind the buttons. No streamlit here; imports the core, `nes.method`, `nes.runs`, `nes.export`."""
