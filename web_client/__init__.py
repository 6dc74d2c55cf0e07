"""The browser client as package data (index.html, app.js, style.css), so an installed wheel
serves it; ``streaming.server.find_web_root`` locates this folder."""
